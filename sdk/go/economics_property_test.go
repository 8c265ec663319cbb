package limitr_test

import (
	"fmt"
	"math/rand"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// propPolicy: flat credits only, so pooled grant balances are linear in the grants.
// tok is priced 0.01 rune, gem is worth 0.5 rune, unp has no rune value.
const propPolicy = `{"policy": {
  "credits": {"tok": {"price": {"amount": 0.01}, "overhead_cost": 0.002}, "gem": {}, "unp": {}},
  "exchange": {"gem": {"value": 0.5, "currency": "rune"}},
  "plans": {"p": {"default": true,
    "entitlements": {
      "h": {"limit": {"credit": "tok", "value": 50, "resets": true, "reset_inc": "1day", "increment": 3}},
      "s": {"limit": {"credit": "tok", "mode": "soft", "value": 30}},
      "u": {"limit": {"credit": "unp", "value": 5, "increment": 0.5}},
      "t": {"limit": {"credit": "tok", "value": 20, "hard_trailing": true}}
    },
    "topups": {
      "t5": {"credit": "tok", "value": 5},
      "g1": {"credit": "gem", "value": 1, "expires_after": "6h"},
      "u2": {"credit": "unp", "value": 2},
      "r":  {"credit": "tok", "value": 3, "resets": true, "reset_inc": "12h", "reset_mode": "add", "max_balance": 7}
    }}}
}}`

// TestEconomicsProperties runs random mixes of Allow / Check / Increment / Decrement /
// ApplyCustomerTopup / clock advances and checks, after every step:
//  1. no grant balance is negative (§8.3);
//  2. RemainingCredit equals the sum of every grant converted with CreditExchange
//     (§8.2; flat credits, so the pool is linear);
//  3. Check answers what the next Allow answers in the same state (ours: one path);
//  4. a denied Allow leaves the customer's JSON unchanged (ours), a due period reset
//     aside — and the snapshot already reports a due reset, so it is unchanged too.
func TestEconomicsProperties(t *testing.T) {
	for seed := int64(1); seed <= 4; seed++ {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { runEconomicsProperties(t, seed, 1500) })
	}
}

func runEconomicsProperties(t *testing.T, seed int64, steps int) {
	rng := rand.New(rand.NewSource(seed))
	e := newEnv(t, propPolicy)
	e.customer("org", "", withType("org"))
	e.customer("c", "", withRefs("org"))
	e.addCap("c", limitr.Cap{ID: "daily", Credit: "rune", Value: 1.5, Resets: true, ResetInc: "1day"})
	e.addCap("org", limitr.Cap{ID: "org", Credit: "rune", Value: 4, Shared: true, IgnoreGrants: true, Resets: true, ResetInc: "2days"})
	ents := []string{"h", "s", "u", "t"}
	topups := []string{"t5", "g1", "u2", "r"}
	credits := []string{"tok", "gem", "unp", "rune"}
	amount := func() float64 {
		switch rng.Intn(6) {
		case 0:
			return -float64(rng.Intn(30)) / 10
		case 1:
			return 0
		case 2:
			return float64(rng.Intn(400)) / 10
		default:
			return float64(rng.Intn(80)) / 10
		}
	}
	denied, allowed := 0, 0
	for i := range steps {
		where := fmt.Sprintf("seed %d step %d", seed, i)
		switch op := rng.Intn(10); {
		case op < 5:
			ent, amt := ents[rng.Intn(len(ents))], amount()
			before := e.snapshotJSON("c")
			orgBefore := e.snapshotJSON("org")
			chk := e.check("c", ent, amt)
			if after := e.snapshotJSON("c"); after != before {
				t.Fatalf("%s: Check(%s, %v) changed the customer:\n%s\n%s", where, ent, amt, before, after)
			}
			got := e.allow("c", ent, amt)
			if got != chk {
				t.Fatalf("%s: Check(%s, %v) = %v but Allow = %v\nstate %s", where, ent, amt, chk, got, before)
			}
			if !got {
				denied++
				if after := e.snapshotJSON("c"); after != before {
					t.Fatalf("%s: denied Allow(%s, %v) changed the customer:\n%s\n%s", where, ent, amt, before, after)
				}
				if after := e.snapshotJSON("org"); after != orgBefore {
					t.Fatalf("%s: denied Allow(%s, %v) changed the org:\n%s\n%s", where, ent, amt, orgBefore, after)
				}
			} else {
				allowed++
			}
		case op < 6:
			ent := ents[rng.Intn(len(ents))]
			if _, err := e.p.Increment(e.ctx, "c", ent); err != nil {
				t.Fatalf("%s: Increment: %v", where, err)
			}
		case op < 7:
			ent := ents[rng.Intn(len(ents))]
			ok, err := e.p.Decrement(e.ctx, "c", ent)
			if err != nil || !ok {
				t.Fatalf("%s: Decrement(%s) = %v, %v; decrements are never denied", where, ent, ok, err)
			}
		case op < 8:
			e.topup("c", topups[rng.Intn(len(topups))])
		default:
			e.clock.Advance(time.Duration(rng.Intn(4*60)) * time.Minute)
		}
		// (1) and (2).
		gs := e.cust("c").Grants
		for id, g := range gs {
			if g.Value < 0 {
				t.Fatalf("%s: grant %s (%s) has a negative balance %v", where, id, g.Topup, g.Value)
			}
		}
		for _, cr := range credits {
			want := 0.0
			for _, g := range gs {
				v, err := e.p.CreditExchange(g.Credit, cr, g.Value)
				if err != nil {
					continue // no rune value: not poolable into cr
				}
				want += v
			}
			got := e.credit("c", cr)
			if !closeTo(got, want, 1e-9) {
				t.Fatalf("%s: RemainingCredit(%s) = %v, want Σ CreditExchange = %v\ngrants %+v", where, cr, got, want, gs)
			}
		}
	}
	if denied == 0 || allowed == 0 {
		t.Errorf("seed %d: degenerate run: %d allowed, %d denied", seed, allowed, denied)
	}
	t.Logf("seed %d: %d allowed, %d denied", seed, allowed, denied)
}
