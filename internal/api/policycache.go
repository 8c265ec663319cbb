package api

import (
	"context"
	"errors"
	"sync"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
)

// compiledCache keeps compiled policy versions by hash: a version is immutable, so an
// entry never goes stale; the cache only bounds memory.
type compiledCache struct {
	mu    sync.Mutex
	max   int
	m     map[string]*policies.Policy
	order []string
}

func newCompiledCache(max int) *compiledCache {
	return &compiledCache{max: max, m: map[string]*policies.Policy{}}
}

func (c *compiledCache) get(v pgstore.Version) (*policies.Policy, error) {
	c.mu.Lock()
	p := c.m[v.Hash]
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	p, err := policies.Load(v.Source, formatOf(v.Format))
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[v.Hash]; !ok {
		if len(c.order) >= c.max {
			delete(c.m, c.order[0])
			c.order = c.order[1:]
		}
		c.m[v.Hash] = p
		c.order = append(c.order, v.Hash)
	}
	return p, nil
}

func formatOf(name string) doctree.Format {
	f, err := doctree.ParseFormat(name)
	if err != nil {
		return doctree.FormatUnknown
	}
	return f
}

// errNoActivePolicy is returned when an environment has nothing published yet.
var errNoActivePolicy = errors.New("no policy is published to this environment")

// activePolicy returns the compiled policy published to an environment and its version.
func (s *Server) activePolicy(ctx context.Context, tenantID, envID uuid.UUID) (*policies.Policy, pgstore.Version, error) {
	v, err := pgstore.ActiveVersion(ctx, s.pool, tenantID, envID)
	if errors.Is(err, pgstore.ErrNotFound) {
		return nil, pgstore.Version{}, errNoActivePolicy
	}
	if err != nil {
		return nil, pgstore.Version{}, err
	}
	p, err := s.policyCache.get(v)
	return p, v, err
}
