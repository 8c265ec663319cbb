package customers

import (
	"context"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
)

// refGraph is the part of an environment's refs graph reachable from some customers,
// loaded breadth first with one query per level, up to policies.MaxRefsVisited
// customers: the stored customers as policies.ResolvePlan and ScopeOwner walk them.
type refGraph map[string]policies.RefNode

func (g refGraph) Node(id string) (policies.RefNode, bool) {
	n, ok := g[id]
	return n, ok
}

// loadRefs loads the customers reachable through refs from start.
func loadRefs(ctx context.Context, db store.DBTX, env store.Environment, start []string) (refGraph, error) {
	g := refGraph{}
	asked := map[string]bool{} // ids looked up, found or not
	frontier := start
	for len(frontier) > 0 && len(asked) <= policies.MaxRefsVisited {
		var missing []string
		for _, id := range frontier {
			if !asked[id] {
				asked[id] = true
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			break
		}
		got, err := store.CustomerProfiles(ctx, db, env.TenantID, env.ID, missing)
		if err != nil {
			return nil, err
		}
		var next []string
		for _, id := range missing { // in refs order, so a bound cuts the same way each time
			if p, ok := got[id]; ok {
				g[id] = policies.RefNode{ID: p.ID, Plan: p.Plan, Type: p.Type, Refs: p.Refs}
				next = append(next, p.Refs...)
			}
		}
		frontier = next
	}
	return g, nil
}

func refNode(c *store.Customer) policies.RefNode {
	return policies.RefNode{ID: c.ID, Plan: c.Plan, Type: c.Type, Refs: c.Refs}
}

// fillResolvedPlans sets ResolvedPlan on customers under p ("" without a policy),
// loading the refs they need in one walk.
func fillResolvedPlans(ctx context.Context, db store.DBTX, p *policies.Policy, env store.Environment, cs ...*store.Customer) error {
	var start []string
	for _, c := range cs {
		c.ResolvedPlan = ""
		if p != nil && (c.Plan == "" || p.Plan(c.Plan) == nil) {
			start = append(start, c.Refs...)
		}
	}
	if p == nil {
		return nil
	}
	g := refGraph{}
	if len(start) > 0 {
		var err error
		if g, err = loadRefs(ctx, db, env, start); err != nil {
			return err
		}
	}
	for _, c := range cs {
		if pl := policies.ResolvePlan(p, refNode(c), g); pl != nil {
			c.ResolvedPlan = pl.Name
		}
	}
	return nil
}

// scopeOwner is the customer of type scope reachable through c's refs that holds a
// scoped entitlement's meter, or "".
func scopeOwner(ctx context.Context, db store.DBTX, env store.Environment, c *store.Customer, scope string) (string, error) {
	g, err := loadRefs(ctx, db, env, c.Refs)
	if err != nil {
		return "", err
	}
	n, ok := policies.ScopeOwner(refNode(c), scope, g)
	if !ok {
		return "", nil
	}
	return n.ID, nil
}
