package ratelimit

import (
	"context"
	"hash/maphash"
	"sync"
	"time"
)

const (
	memoryShards = 64
	// sweepEvery is how often a shard drops its idle keys (lazily, on Allow).
	sweepEvery = time.Minute
)

// Memory is an in-process Limiter: one GCRA state per key in a sharded map.
// It suits a single replica, tests, or a fallback; limits are per process.
type Memory struct {
	g      gcra
	now    func() time.Time
	seed   maphash.Seed
	shards [memoryShards]memoryShard
}

type memoryShard struct {
	mu        sync.Mutex
	tats      map[string]int64 // key -> TAT, unix nanoseconds
	lastSweep int64
}

var _ Limiter = (*Memory)(nil)

// NewMemory returns an in-process limiter allowing rate requests per per for
// each key, with bursts of up to burst requests (burst < 1 means rate). It
// panics if rate < 1 or per <= 0.
//
// Idle keys (whose bucket is full again) are dropped from memory by a sweep
// each shard runs at most once a minute during Allow; no goroutine is started.
func NewMemory(rate int, per time.Duration, burst int) *Memory {
	m := &Memory{g: newGCRA(rate, per, burst), now: time.Now, seed: maphash.MakeSeed()}
	for i := range m.shards {
		m.shards[i].tats = make(map[string]int64)
	}
	return m
}

// Allow implements Limiter. It never returns an error.
func (m *Memory) Allow(_ context.Context, key string) (Decision, error) {
	now := m.now()
	nowNS := now.UnixNano()
	s := &m.shards[maphash.String(m.seed, key)%memoryShards]

	s.mu.Lock()
	defer s.mu.Unlock()
	if nowNS-s.lastSweep >= int64(sweepEvery) {
		for k, tat := range s.tats {
			if tat <= nowNS {
				delete(s.tats, k)
			}
		}
		s.lastSweep = nowNS
	}
	var tat time.Time
	if ns, ok := s.tats[key]; ok {
		tat = time.Unix(0, ns)
	}
	d, newTAT := m.g.decide(now, tat)
	if d.Allowed {
		s.tats[key] = newTAT.UnixNano()
	}
	return d, nil
}

// keys reports how many keys are held, for tests.
func (m *Memory) keys() int {
	n := 0
	for i := range m.shards {
		s := &m.shards[i]
		s.mu.Lock()
		n += len(s.tats)
		s.mu.Unlock()
	}
	return n
}
