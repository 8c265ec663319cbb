package billing

import (
	"os"
	"testing"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

func loadPolicy(t testing.TB, path string) *policies.Policy {
	t.Helper()
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := policies.Load(src, doctree.FormatYAML)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

func TestGoldenPolicyLoads(t *testing.T) { loadPolicy(t, "testdata/policy.yaml") }
