package enforcement

import (
	"slices"
	"sync"
	"time"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// meter is the usage of one entitlement in the current period. A deployment holds
// millions of them, so every byte counts: see meterKey.
type meter struct {
	key      *meterKey // the entitlement, and the credit it is metered in
	started  int64     // unix nanoseconds: start of the current period
	value    num.Dec
	overhead num.Dec // runes spent this period
	// periodEnd caches when the current period ends under periodOf, so a warm call
	// skips calendar maths: no reset is due while now < periodEnd.
	periodEnd int64
	periodOf  *policies.CompiledLimit
	ext       *meterExt     // holds, governor, attribution; nil until needed
	pending   *pendingUsage // usage not yet drained for cloud sync
	burn      burn          // recent calls, for the burn-rate reads
	lease     *meterLease   // this instance's allowance lease (fleet mode Exact), nil until asked
}

// meterKey is what a meter counts: its entitlement and the credit it was last metered
// in. Meters share one per distinct pair (Engine.meterKey) instead of holding the two
// strings: millions of meters, a handful of pairs.
type meterKey struct {
	ent, credit string
}

// meterKeyTable holds an engine's meter keys. Pairs come from the policies enforced
// and from restored or synced state, so the table stays as small as the names a
// deployment uses; it is never pruned.
type meterKeyTable struct {
	mu sync.RWMutex
	m  map[meterKey]*meterKey
}

// meterKey returns the shared key for ent metered in credit.
func (e *Engine) meterKey(ent, credit string) *meterKey {
	t := &e.meterKeys
	k := meterKey{ent: ent, credit: credit}
	t.mu.RLock()
	shared := t.m[k]
	t.mu.RUnlock()
	if shared != nil {
		return shared
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if shared := t.m[k]; shared != nil {
		return shared
	}
	if t.m == nil {
		t.m = map[meterKey]*meterKey{}
	}
	// The names are kept as given, usually the policy's own strings: comparing a
	// meter's names with the policy's then finds the same pointer and skips the bytes.
	shared = &meterKey{ent: ent, credit: credit}
	t.m[k] = shared
	return shared
}

func (m *meter) ent() string    { return m.key.ent }
func (m *meter) credit() string { return m.key.credit }

// setCredit records the credit the meter is metered in. Caller holds the owner's mu.
func (e *Engine) setCredit(m *meter, credit string) {
	if m.key.credit != credit {
		m.key = e.meterKey(m.key.ent, credit)
	}
}

// meterExt is the meter state only some entitlements need.
type meterExt struct {
	holds        []hold
	govInit      bool
	govTokens    num.Dec
	govLast      int64
	grantCovered num.Dec // units of this period's overage paid by grants
	topupRevenue num.Dec // topup revenue recognised this period (runes)
	estimates    map[string]*estimator
}

type hold struct {
	id       string
	value    num.Dec
	overhead num.Dec
	expires  int64
	basis    float64
	segment  string
}

func (m *meter) extension() *meterExt {
	if m.ext == nil {
		m.ext = &meterExt{}
	}
	return m.ext
}

// resetPeriod zeroes what belongs to a period; holds and estimates survive it.
func (m *meter) resetPeriod(start int64) {
	m.started = start
	m.value, m.overhead = num.Zero, num.Zero
	m.burn = burn{}
	if x := m.ext; x != nil {
		x.govInit, x.govTokens, x.govLast = false, num.Zero, 0
		x.grantCovered, x.topupRevenue = num.Zero, num.Zero
	}
}

// held sums unexpired holds at now.
func (m *meter) held(now int64) num.Dec {
	if m == nil || m.ext == nil || len(m.ext.holds) == 0 {
		return num.Zero
	}
	var c num.Calc
	sum := num.Zero
	for _, h := range m.ext.holds {
		if h.expires > now {
			sum = c.Add(sum, h.value)
		}
	}
	return sum
}

func (m *meter) pruneHolds(now int64) {
	if m.ext == nil {
		return
	}
	m.ext.holds = slices.DeleteFunc(m.ext.holds, func(h hold) bool { return h.expires <= now })
}

func (m *meter) startedAt() time.Time { return time.Unix(0, m.started).UTC() }
