package expr

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestHang(t *testing.T) {
	files, _ := filepath.Glob("/tmp/hang/*")
	for _, f := range files {
		b, _ := os.ReadFile(f)
		done := make(chan struct{})
		go func() {
			defer close(done)
			start := time.Now()
			_, err := CompileCost(string(b))
			t.Logf("%s: %v %v", f, time.Since(start), err)
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Errorf("%s: hang", f)
		}
	}
}
