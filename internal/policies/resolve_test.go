package policies_test

import (
	"testing"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
)

type graph map[string]policies.RefNode

func (g graph) Node(id string) (policies.RefNode, bool) {
	n, ok := g[id]
	return n, ok
}

func TestResolvePlanThroughRefs(t *testing.T) {
	t.Parallel()
	p, err := policies.Load([]byte(`{"policy": {"credits": {"c": {}}, "plans": {
		"free": {"default": true, "entitlements": {"x": {}}},
		"pro": {"entitlements": {"x": {}}},
		"team": {"entitlements": {"x": {}}}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	g := graph{
		"org":      {ID: "org", Plan: "pro", Type: "org"},
		"team":     {ID: "team", Plan: "team", Type: "team", Refs: []string{"org"}},
		"noplan":   {ID: "noplan", Type: "team", Refs: []string{"org"}},
		"gone":     {ID: "gone", Plan: "nosuchplan", Type: "org"},
		"cycle-a":  {ID: "cycle-a", Refs: []string{"cycle-b"}},
		"cycle-b":  {ID: "cycle-b", Refs: []string{"cycle-a"}},
		"deep-org": {ID: "deep-org", Type: "org", Refs: []string{"team"}},
	}
	cases := []struct {
		name       string
		self       policies.RefNode
		plan       string // ResolvePlan
		throughRef string // PlanThroughRefs ("" = nil)
	}{
		{"own plan", policies.RefNode{ID: "u", Plan: "team"}, "team", "team"},
		{"own unknown plan falls through to refs", policies.RefNode{ID: "u", Plan: "nope", Refs: []string{"org"}}, "pro", "pro"},
		{"first ref wins, depth first", policies.RefNode{ID: "u", Refs: []string{"noplan", "team"}}, "pro", "pro"},
		{"ref order", policies.RefNode{ID: "u", Refs: []string{"team", "org"}}, "team", "team"},
		{"unknown refs and unknown plans skipped", policies.RefNode{ID: "u", Refs: []string{"missing", "gone", "org"}}, "pro", "pro"},
		{"no refs: default", policies.RefNode{ID: "u"}, "free", ""},
		{"a cycle terminates: default", policies.RefNode{ID: "u", Refs: []string{"cycle-a"}}, "free", ""},
		{"self reference ignored", policies.RefNode{ID: "cycle-a", Refs: []string{"cycle-b"}}, "free", ""},
	}
	for _, c := range cases {
		got := policies.ResolvePlan(p, c.self, g)
		if got == nil || got.Name != c.plan {
			t.Errorf("%s: ResolvePlan = %v, want %s", c.name, got, c.plan)
		}
		through := policies.PlanThroughRefs(p, c.self, g)
		switch {
		case c.throughRef == "" && through != nil:
			t.Errorf("%s: PlanThroughRefs = %s, want nil", c.name, through.Name)
		case c.throughRef != "" && (through == nil || through.Name != c.throughRef):
			t.Errorf("%s: PlanThroughRefs = %v, want %s", c.name, through, c.throughRef)
		}
	}
}

func TestScopeOwner(t *testing.T) {
	t.Parallel()
	g := graph{
		"team":  {ID: "team", Type: "team", Refs: []string{"org2", "org"}},
		"team2": {ID: "team2", Type: "team", Refs: []string{"org"}},
		"org":   {ID: "org", Type: "org"},
		"org2":  {ID: "org2", Type: "org"},
		"loop":  {ID: "loop", Type: "team", Refs: []string{"loop2"}},
		"loop2": {ID: "loop2", Type: "team", Refs: []string{"loop"}},
	}
	refs := []string{"team2", "team"}
	self := policies.RefNode{ID: "u", Type: "user", Refs: refs}
	// Breadth first: team2 and team are level 1; level 2 visits team2's refs first.
	if n, ok := policies.ScopeOwner(self, "org", g); !ok || n.ID != "org" {
		t.Fatalf("org owner = %v %v", n, ok)
	}
	if n, ok := policies.ScopeOwner(self, "team", g); !ok || n.ID != "team2" {
		t.Fatalf("team owner = %v %v", n, ok)
	}
	if _, ok := policies.ScopeOwner(policies.RefNode{ID: "u", Refs: []string{"loop"}}, "org", g); ok {
		t.Fatal("found an org in a loop without one")
	}
	if refs[0] != "team2" || refs[1] != "team" || len(refs) != 2 {
		t.Fatalf("ScopeOwner changed the caller's refs: %v", refs)
	}
}

// A long chain is cut at MaxRefsVisited rather than walked to the end.
func TestResolutionIsBounded(t *testing.T) {
	t.Parallel()
	p, err := policies.Load([]byte(`{"policy": {"credits": {"c": {}}, "plans": {"free": {"default": true, "entitlements": {"x": {}}}, "pro": {"entitlements": {"x": {}}}}}}`), doctree.FormatJSON)
	if err != nil {
		t.Fatal(err)
	}
	g := graph{}
	const n = policies.MaxRefsVisited + 50
	for i := range n {
		id := itoa(i)
		node := policies.RefNode{ID: id, Type: "team", Refs: []string{itoa(i + 1)}}
		if i == n-1 {
			node = policies.RefNode{ID: id, Plan: "pro", Type: "org"}
		}
		g[id] = node
	}
	self := policies.RefNode{ID: "u", Refs: []string{"0"}}
	if pl := policies.ResolvePlan(p, self, g); pl.Name != "free" {
		t.Fatalf("a plan past the bound was found: %s", pl.Name)
	}
	if _, ok := policies.ScopeOwner(self, "org", g); ok {
		t.Fatal("an owner past the bound was found")
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{digits[i%10]}, b...)
	}
	return string(b)
}
