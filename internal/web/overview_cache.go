package web

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/analytics"
	"github.com/limitr/limitr/internal/store"
)

// The worst-margins ranking reads two running-total rows per customer: about half a
// second at 100k customers on a small machine, over the Overview's budget. So a ranking
// that took longer than slowRanking is kept for rankingTTL and then served while a
// fresh one is computed in the background; a quick one (a small tenant) is never kept,
// so it is always current.
const (
	rankingTTL = time.Minute
	// rankingTimeout bounds a background refresh.
	rankingTimeout = 30 * time.Second
)

// slowRanking is the ranking time above which a ranking is kept (a variable for tests).
var slowRanking = 50 * time.Millisecond

type rankingKey struct {
	env      uuid.UUID
	from, to time.Time
}

type ranking struct {
	rows       []worstRow
	at         time.Time
	refreshing bool
}

// rankings are the kept worst-margin rankings, by environment and window.
type rankings struct {
	mu sync.Mutex
	m  map[rankingKey]*ranking
}

// worstMargins returns the environment's worst-margin customers over [from, to) and
// when they were ranked.
func (s *Server) worstMargins(ctx context.Context, env store.Environment, from, to time.Time) ([]worstRow, time.Time, error) {
	key := rankingKey{env.ID, from, to}
	r := &s.rankings
	r.mu.Lock()
	if e, ok := r.m[key]; ok {
		if time.Since(e.at) >= rankingTTL && !e.refreshing {
			e.refreshing = true
			go s.refreshRanking(context.WithoutCancel(ctx), env, key)
		}
		rows, at := e.rows, e.at
		r.mu.Unlock()
		return rows, at, nil
	}
	r.mu.Unlock()
	rows, at, err := s.rankWorst(ctx, env, key)
	return rows, at, err
}

func (s *Server) refreshRanking(ctx context.Context, env store.Environment, key rankingKey) {
	ctx, cancel := context.WithTimeout(ctx, rankingTimeout)
	defer cancel()
	if _, _, err := s.rankWorst(ctx, env, key); err != nil {
		s.log.Warn("web: refreshing the worst margins failed; the previous ranking stays", "err", err, "environment", env.ID)
		s.rankings.mu.Lock()
		if e, ok := s.rankings.m[key]; ok {
			e.refreshing = false
		}
		s.rankings.mu.Unlock()
	}
}

// rankWorst ranks the customers now, keeping the result when that was slow.
func (s *Server) rankWorst(ctx context.Context, env store.Environment, key rankingKey) ([]worstRow, time.Time, error) {
	start := time.Now()
	m, err := s.deps.Analytics.Margins(ctx, env, analytics.MarginsQuery{GroupBy: analytics.ByCustomer, From: key.from, To: key.to,
		Interval: analytics.Day, Limit: overviewWorst})
	if err != nil {
		return nil, time.Time{}, err
	}
	rows := make([]worstRow, 0, len(m.Groups))
	for _, g := range m.Groups {
		rows = append(rows, worstRow{Group: g, Losing: strings.HasPrefix(g.Totals.Margin, "-")})
	}
	r := &s.rankings
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(start) < slowRanking {
		delete(r.m, key)
		return rows, start, nil
	}
	if r.m == nil {
		r.m = map[rankingKey]*ranking{}
	}
	for k, e := range r.m { // windows of past days
		if time.Since(e.at) > 10*rankingTTL && !e.refreshing {
			delete(r.m, k)
		}
	}
	r.m[key] = &ranking{rows: rows, at: start}
	return rows, start, nil
}
