package config

import (
	"os"
	"strings"
	"testing"
)

// The README's configuration tables must list every setting with its default.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(raw)
	for _, settings := range [][]Setting{APISettings, WorkerSettings} {
		for _, s := range settings {
			row := "| `--" + s.Flag + "` | `" + s.Env + "` | "
			i := strings.Index(readme, row)
			if i < 0 {
				t.Errorf("README has no row for --%s / %s", s.Flag, s.Env)
				continue
			}
			line := readme[i : i+strings.Index(readme[i:], "\n")]
			if s.Default != "" && !strings.Contains(line, "`"+s.Default+"`") {
				t.Errorf("README row for --%s does not show its default %q: %s", s.Flag, s.Default, line)
			}
		}
	}
}
