package policies

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/policies/doctree"
)

// FuzzLoad feeds arbitrary documents to the loader: it must never panic, every
// rejection must be a ValidationError whose problems each say where they are, and
// every accepted document must survive a marshal round trip in all three formats.
func FuzzLoad(f *testing.F) {
	files, _ := filepath.Glob("../../examples/policies/*")
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(`{"policy": {"credits": {"c": {}}, "plans": {"p": {"entitlements": {"e": {"limit": {"credit": "c", "value": "3GB"}}}}}}}`))
	f.Add([]byte("policy:\n  plans:\n    p:\n      entitlements:\n        e: {limit: {credit: x, reset_sch: 'monthly:40'}}\n"))
	f.Add([]byte("[policy.credits.c]\nstof_units = 'MB'\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Load(data, doctree.FormatUnknown)
		if err != nil {
			var ve *ValidationError
			if !errors.As(err, &ve) || !errors.Is(err, ErrInvalidPolicy) {
				t.Fatalf("error is not a ValidationError: %T %v", err, err)
			}
			if len(ve.Problems) == 0 {
				t.Fatal("ValidationError without problems")
			}
			for _, pr := range ve.Problems {
				if pr.Message == "" || (pr.Path == "" && pr.Line == 0 && !strings.Contains(pr.Message, "empty")) {
					t.Fatalf("problem does not say where it is: %+v", pr)
				}
			}
			return
		}
		for _, f := range []doctree.Format{doctree.FormatJSON, doctree.FormatYAML, doctree.FormatTOML} {
			out, err := p.Marshal(f)
			if err != nil {
				if errors.Is(err, doctree.ErrUnsupported) && f == doctree.FormatTOML {
					continue
				}
				t.Fatalf("marshal %s: %v", f, err)
			}
			again, err := Load(out, f)
			if err != nil {
				t.Fatalf("reload %s: %v\n%s", f, err, out)
			}
			if again.Hash != p.Hash {
				t.Fatalf("%s round trip changed the policy:\n%s", f, out)
			}
		}
	})
}
