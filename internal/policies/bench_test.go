package policies

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/limitr/limitr/internal/policies/doctree"
)

// BenchmarkLoadExamples: parse, validate and compile each example policy (budget ≤ 5 ms).
func BenchmarkLoadExamples(b *testing.B) {
	files, _ := filepath.Glob("../../examples/policies/*")
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(filepath.Base(f), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Load(data, doctree.FormatFromPath(f)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
