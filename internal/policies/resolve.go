package policies

// Plan resolution and scope ownership through refs: one rule, used by the engine over
// the customers it holds and by the control plane over the customers it stores.

// MaxRefsVisited bounds the customers one resolution visits, so a huge or adversarial
// refs graph cannot make a call expensive.
const MaxRefsVisited = 1000

// RefNode is what resolution reads of one customer.
type RefNode struct {
	ID   string
	Plan string // "" inherits through refs
	Type string
	Refs []string
	// Ref is the graph's own handle on the customer, handed back untouched (the
	// engine's customer, so finding the scope owner takes no second lookup).
	Ref any
}

// RefGraph finds customers by id. Refs name ids, never alt ids.
type RefGraph interface {
	Node(id string) (RefNode, bool)
}

// ResolvePlan is the plan a customer is on: its own plan if the policy has it, else the
// first plan found through its refs (depth first, in refs order), else the policy's
// default plan (nil when there is none).
func ResolvePlan(p *Policy, self RefNode, g RefGraph) *CompiledPlan {
	if pl := PlanThroughRefs(p, self, g); pl != nil {
		return pl
	}
	return p.DefaultPlan
}

// PlanThroughRefs is ResolvePlan without the default plan: nil when neither the
// customer nor anything it refers to names a plan of the policy.
func PlanThroughRefs(p *Policy, self RefNode, g RefGraph) *CompiledPlan {
	if self.Plan != "" {
		if pl := p.Plan(self.Plan); pl != nil {
			return pl
		}
	}
	if len(self.Refs) == 0 {
		return nil
	}
	var seen visited
	seen.add(self.ID)
	return planThroughRefs(p, self.Refs, g, &seen)
}

func planThroughRefs(p *Policy, refs []string, g RefGraph, seen *visited) *CompiledPlan {
	for _, r := range refs {
		if seen.len() > MaxRefsVisited || seen.has(r) {
			continue
		}
		n, ok := g.Node(r)
		if !ok {
			continue
		}
		seen.add(r)
		if n.Plan != "" {
			if pl := p.Plan(n.Plan); pl != nil {
				return pl
			}
		}
		if pl := planThroughRefs(p, n.Refs, g, seen); pl != nil {
			return pl
		}
	}
	return nil
}

// ScopeOwner is the customer of type scope nearest through refs (breadth first, in
// refs order), which holds a scoped entitlement's meter; false when none is reachable.
func ScopeOwner(self RefNode, scope string, g RefGraph) (RefNode, bool) {
	var seen visited
	seen.add(self.ID)
	frontier := self.Refs
	for len(frontier) > 0 {
		var next []string // never reuse frontier's array: the first one is the caller's refs
		for _, r := range frontier {
			if seen.len() > MaxRefsVisited || seen.has(r) {
				continue
			}
			n, ok := g.Node(r)
			if !ok {
				continue
			}
			if n.Type == scope {
				return n, true
			}
			seen.add(r)
			next = append(next, n.Refs...)
		}
		frontier = next
	}
	return RefNode{}, false
}

// visited is a set of customer ids that stays on the stack for the few customers a
// typical resolution visits (a user and its org), and grows into a map past that.
type visited struct {
	small [8]string
	n     int
	big   map[string]struct{}
}

func (v *visited) len() int { return v.n }

func (v *visited) has(id string) bool {
	for i := range min(v.n, len(v.small)) {
		if v.small[i] == id {
			return true
		}
	}
	_, ok := v.big[id]
	return ok
}

func (v *visited) add(id string) {
	if v.n < len(v.small) {
		v.small[v.n] = id
	} else {
		if v.big == nil {
			v.big = make(map[string]struct{})
		}
		v.big[id] = struct{}{}
	}
	v.n++
}
