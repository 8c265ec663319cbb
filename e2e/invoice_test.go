package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/billing/money"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/bus"
	limitr "github.com/limitr/limitr/sdk/go"
)

// invoicePolicy prices three entitlements three ways, without a plan fee: tokens at a
// flat price past a soft limit of 1,000,000 (with a purchasable 500,000-token pack),
// images on a tiered curve past 50 and minutes on a volume curve from the first one.
// Grants pay only for tokens (grants_apply: false elsewhere; a grant would otherwise
// pay for any credit through its rune value).
// Every limit resets monthly on the billing anchor, so meter periods are billing
// periods. The curves are internal/billing/testdata/policy.yaml's.
const invoicePolicy = `{"policy": {
  "credits": {
    "token": { "price": { "amount": 0.00002 } },
    "image": { "pricing_model": "tiered", "tiers": [
      { "up_to": 100, "price": { "amount": 0.04 } },
      { "up_to": 1000, "price": { "amount": 0.03 } },
      { "price": { "amount": 0.015 } } ] },
    "minute": { "pricing_model": "volume", "tiers": [
      { "up_to": 1000, "price": { "amount": 0.012 } },
      { "up_to": 10000, "price": { "amount": 0.009 } },
      { "price": { "amount": 0.007 } } ] }
  },
  "plans": {
    "basic": {
      "default": true,
      "entitlements": {
        "tokens": { "limit": { "credit": "token", "mode": "soft", "value": 1000000, "resets": true, "reset_sch": "monthly:anchor" } },
        "images": { "limit": { "credit": "image", "mode": "soft", "value": 50, "resets": true, "reset_sch": "monthly:anchor", "grants_apply": false } },
        "minutes": { "limit": { "credit": "minute", "mode": "soft", "value": 0, "resets": true, "reset_sch": "monthly:anchor", "grants_apply": false } }
      },
      "topups": { "token_pack": { "credit": "token", "value": 500000, "price": { "amount": 8 } } }
    }
  }
}}`

type invoiceCall struct {
	ent    string
	amount float64
}

// invoiceCalls is the usage both customers make, in order. Split round-robin over three
// instances, instance 1 makes calls 0, 3, 6, 9 and 12, and so every tokens call: the
// calls that draw from the token pack stay on one instance. Across instances a grant is
// only as consistent as their view of each other (README, Cloud mode: Limitations: within
// the sync window several instances can each draw the same balance); this test is about
// rating, which must not depend on how usage was split.
var invoiceCalls = []invoiceCall{
	{"tokens", 900_000}, {"images", 120}, {"minutes", 1800},
	{"tokens", 400_000}, {"images", 200}, {"minutes", 2200},
	{"tokens", 450_000}, {"minutes", 2600}, {"images", 330},
	{"images", 150}, {"minutes", 3100}, {"images", 281},
	{"minutes", 2900},
}

type invoiceLine struct {
	Kind          string `json:"kind"`
	Entitlement   string `json:"entitlement"`
	Description   string `json:"description"`
	Quantity      string `json:"quantity"`
	UnitAmount    string `json:"unit_amount"`
	Amount        string `json:"amount"`
	PolicyVersion int    `json:"policy_version"`
}

type invoiceReply struct {
	Customer    string        `json:"customer"`
	Status      string        `json:"status"`
	Currency    string        `json:"currency"`
	PeriodStart time.Time     `json:"period_start"`
	PeriodEnd   time.Time     `json:"period_end"`
	Lines       []invoiceLine `json:"lines"`
	Subtotal    string        `json:"subtotal"`
	Total       string        `json:"total"`
	AmountDue   string        `json:"amount_due"`
}

func dec(t *testing.T, s string) num.Dec {
	t.Helper()
	d, err := num.Parse(s)
	if err != nil {
		t.Fatalf("not a decimal: %q: %v", s, err)
	}
	return d
}

// decOf converts a float64 the SDK reports through its shortest decimal form (as the
// engine converts at its edge).
func decOf(t *testing.T, f float64) num.Dec {
	t.Helper()
	d, err := num.FromFloat64(f)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func decSub(t *testing.T, a, b num.Dec) num.Dec {
	t.Helper()
	d, err := a.Sub(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func decSum(t *testing.T, ds ...num.Dec) num.Dec {
	t.Helper()
	s := num.Zero
	for _, d := range ds {
		var err error
		if s, err = s.Add(d); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// usageTotals sums an invoice's usage and credit lines, in all and per entitlement.
func (inv invoiceReply) usageTotals(t *testing.T) (num.Dec, map[string]num.Dec) {
	t.Helper()
	total, per := num.Zero, map[string]num.Dec{}
	for _, l := range inv.Lines {
		if l.Kind != "usage" && l.Kind != "credit" {
			continue
		}
		a := dec(t, l.Amount)
		total = decSum(t, total, a)
		per[l.Entitlement] = decSum(t, per[l.Entitlement], a)
	}
	return total, per
}

func (inv invoiceReply) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s %s [%s, %s) total %s", inv.Customer, inv.Status, inv.Currency,
		inv.PeriodStart.Format(time.RFC3339), inv.PeriodEnd.Format(time.RFC3339), inv.Total)
	for _, l := range inv.Lines {
		fmt.Fprintf(&b, "\n    %-6s %-8s %-9s qty %-8s %s", l.Kind, l.Entitlement, l.Amount, l.Quantity, l.Description)
	}
	return b.String()
}

// TestInvoiceFleetContract is the billing contract across a fleet. One customer served
// by one SDK instance gets an upcoming invoice whose usage total (usage and credit lines)
// is that instance's CustomerMarginSnapshot Revenue − GrantCoveredRevenue, to the cent;
// a second customer making the same calls through three instances at once gets the same
// invoice, line for line. The instances' own price estimates (the price their usage
// deltas carry) add up to something else for the tiered and volume curves, because each
// prices its share from its own position on the curve: the server re-rates the committed
// totals instead.
func TestInvoiceFleetContract(t *testing.T) {
	_, pool := newDB(t)
	rurl := sharedRedisURL(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, redisClient(t, rurl), apiLog, "")
	startWorker(t, pool, bus.NewRedis(redisClient(t, rurl), workerLog.logger(slog.LevelWarn)), 200*time.Millisecond, workerLog)
	cp := newControlPlane(t, a.URL)
	cp.setup([]byte(invoicePolicy))
	ctx := context.Background()
	for _, id := range []string{"solo", "fleet"} {
		cp.createCustomer(id, "basic")
		code, data := cp.do(http.MethodPost, "/v1/environments/production/customers/"+id+"/topups", cp.admin, map[string]string{"topup": "token_pack"})
		cp.decode(code, http.StatusCreated, data, "apply the token pack to "+id, nil)
	}
	allow := func(p *limitr.Policy, customer string, c invoiceCall) error {
		ok, err := p.Allow(ctx, customer, c.ent, c.amount)
		if err == nil && !ok {
			err = fmt.Errorf("Allow(%s, %s, %v) denied on a soft limit", customer, c.ent, c.amount)
		}
		return err
	}

	// Scenario A: one instance serves "solo".
	solo := connectSDK(t, a.URL, cp.sdk, sdkLog)
	for _, c := range invoiceCalls {
		if err := allow(solo, "solo", c); err != nil {
			t.Fatal(err)
		}
	}
	margin, err := solo.CustomerMarginSnapshot(ctx, "solo")
	if err != nil {
		t.Fatal(err)
	}
	if margin.GrantCoveredRevenue <= 0 || margin.GrantCoveredRevenue >= margin.Entitlements["tokens"].Revenue {
		t.Fatalf("the token pack should pay part of the tokens overage: %+v", margin)
	}

	// Scenario B: three instances serve "fleet", the same calls split round-robin and
	// made concurrently. Each instance loads the customer first, so the calls themselves
	// are local decisions made between two flushes.
	fleet := make([]*limitr.Policy, 3)
	for i := range fleet {
		fleet[i] = connectSDK(t, a.URL, cp.sdk, sdkLog)
		if _, err := fleet[i].Customer(ctx, "fleet"); err != nil {
			t.Fatalf("instance %d: %v", i+1, err)
		}
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, len(fleet))
	for i, p := range fleet {
		wg.Go(func() {
			<-start
			for k := i; k < len(invoiceCalls); k += len(fleet) {
				if err := allow(p, "fleet", invoiceCalls[k]); err != nil {
					errs[i] = fmt.Errorf("instance %d: %w", i+1, err)
					return
				}
			}
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	stats := closeAll(t, append([]*limitr.Policy{solo}, fleet...), 15*time.Second)
	for i, s := range stats {
		if s.Dropped != 0 || s.Rejected != 0 || s.Unattributed != 0 || s.Queued != 0 || s.Pending != 0 {
			t.Fatalf("instance %d after Close: %+v", i, s)
		}
	}
	waitDrained(t, pool, 20*time.Second)

	upcoming := func(id string) invoiceReply {
		t.Helper()
		var inv invoiceReply
		code, data := cp.do(http.MethodGet, "/v1/environments/production/customers/"+id+"/invoices/upcoming", cp.admin, nil)
		cp.decode(code, http.StatusOK, data, "upcoming invoice of "+id, &inv)
		if inv.Status != "upcoming" || inv.Currency != "USD" || inv.Customer != id {
			t.Fatalf("upcoming invoice of %s: %s", id, data)
		}
		return inv
	}
	soloInv, fleetInv := upcoming("solo"), upcoming("fleet")
	t.Logf("solo's upcoming invoice: %v", soloInv)

	// The invoice bills what the margin snapshot reports, entitlement by entitlement
	// (each meter period's usage and credit lines sum to its net, rounded once) and in
	// total.
	kinds := map[string]int{}
	for _, l := range soloInv.Lines {
		kinds[l.Kind]++
	}
	if kinds["usage"] != 3 || kinds["credit"] != 1 || len(soloInv.Lines) != 4 {
		t.Fatalf("solo's invoice should have a usage line per entitlement and one grant credit: %v", soloInv)
	}
	total, perEnt := soloInv.usageTotals(t)
	wantTotal := money.Round(decSub(t, decOf(t, margin.Revenue), decOf(t, margin.GrantCoveredRevenue)), 2)
	if total.Cmp(wantTotal) != 0 {
		t.Errorf("solo's invoice bills %s of usage; its margin snapshot: Revenue %v − GrantCoveredRevenue %v = %s (to the cent)",
			total, margin.Revenue, margin.GrantCoveredRevenue, wantTotal)
	}
	if dec(t, soloInv.Total).Cmp(total) != 0 {
		t.Errorf("solo's invoice total %s differs from its usage total %s (it has no other lines)", soloInv.Total, total)
	}
	for ent, em := range margin.Entitlements {
		want := money.Round(decSub(t, decOf(t, em.Revenue), decOf(t, em.GrantCoveredRevenue)), 2)
		if got := perEnt[ent]; got.Cmp(want) != 0 {
			t.Errorf("%s: the invoice bills %s; the margin snapshot %v − %v = %s", ent, got, em.Revenue, em.GrantCoveredRevenue, want)
		}
	}
	if len(perEnt) != len(margin.Entitlements) {
		t.Errorf("the invoice bills %d entitlements, the margin snapshot has %d", len(perEnt), len(margin.Entitlements))
	}

	// The fleet's invoice is solo's, line for line.
	if len(fleetInv.Lines) != len(soloInv.Lines) {
		t.Fatalf("fleet's invoice has %d lines, solo's %d:\n%v\n%v", len(fleetInv.Lines), len(soloInv.Lines), fleetInv, soloInv)
	}
	for i := range soloInv.Lines {
		if fleetInv.Lines[i] != soloInv.Lines[i] {
			t.Errorf("line %d: fleet %+v, solo %+v", i, fleetInv.Lines[i], soloInv.Lines[i])
		}
	}
	t.Logf("fleet's upcoming invoice (3 instances): %v", fleetInv)
	if fleetInv.Subtotal != soloInv.Subtotal || fleetInv.Total != soloInv.Total || fleetInv.AmountDue != soloInv.AmountDue {
		t.Errorf("fleet's invoice totals %s/%s/%s, solo's %s/%s/%s", fleetInv.Subtotal, fleetInv.Total, fleetInv.AmountDue,
			soloInv.Subtotal, soloInv.Total, soloInv.AmountDue)
	}

	// What the instances estimated: the price their usage deltas carried, per instance.
	type estimate struct {
		customer, instance, ent string
		price                   num.Dec
	}
	rows, err := pool.Query(ctx, `select customer_id, instance_id, entitlement, sum(price)::text from usage_deltas group by 1, 2, 3`)
	if err != nil {
		t.Fatal(err)
	}
	var ests []estimate
	for rows.Next() {
		var e estimate
		var price string
		if err := rows.Scan(&e.customer, &e.instance, &e.ent, &price); err != nil {
			t.Fatal(err)
		}
		e.price = dec(t, price)
		ests = append(ests, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	sort.Slice(ests, func(i, j int) bool {
		if ests[i].customer != ests[j].customer {
			return ests[i].customer < ests[j].customer
		}
		if ests[i].ent != ests[j].ent {
			return ests[i].ent < ests[j].ent
		}
		return ests[i].instance < ests[j].instance
	})
	naive := map[string]map[string]num.Dec{"solo": {}, "fleet": {}}
	instances := map[string]map[string]bool{"solo": {}, "fleet": {}}
	for _, e := range ests {
		naive[e.customer][e.ent] = decSum(t, naive[e.customer][e.ent], e.price)
		instances[e.customer][e.instance] = true
	}
	if len(instances["solo"]) != 1 || len(instances["fleet"]) != 3 {
		t.Fatalf("usage of solo from %d instances, of fleet from %d; want 1 and 3", len(instances["solo"]), len(instances["fleet"]))
	}
	gross := func(inv invoiceReply, ent string) num.Dec {
		for _, l := range inv.Lines {
			if l.Kind == "usage" && l.Entitlement == ent {
				return dec(t, l.Amount)
			}
		}
		return num.Zero
	}
	naiveTotal, invoiceGross := num.Zero, num.Zero
	for _, ent := range []string{"images", "minutes", "tokens"} {
		g := gross(fleetInv, ent)
		invoiceGross = decSum(t, invoiceGross, g)
		naiveTotal = decSum(t, naiveTotal, naive["fleet"][ent])
		// One instance's estimate is the invoice's line: it saw all of the usage.
		if s := money.Round(naive["solo"][ent], 2); s.Cmp(gross(soloInv, ent)) != 0 {
			t.Errorf("%s: solo's instance estimated %s, its invoice bills %s", ent, s, gross(soloInv, ent))
		}
		f := money.Round(naive["fleet"][ent], 2)
		switch ent {
		case "tokens":
			// A flat price is additive: the sum of the estimates is right.
			if f.Cmp(g) != 0 {
				t.Errorf("tokens (flat): the fleet's estimates sum to %s, its invoice bills %s", f, g)
			}
		default:
			if f.Cmp(g) == 0 {
				t.Errorf("%s: the fleet's per-instance estimates sum to the invoice's %s; the numbers should show the re-rating", ent, g)
			}
		}
		t.Logf("%-7s invoice %7s  sum of the 3 instances' estimates %s", ent, g, f)
	}
	if money.Round(naiveTotal, 2).Cmp(invoiceGross) == 0 {
		t.Errorf("the per-instance estimates sum to the invoice's usage %s", invoiceGross)
	}
	t.Logf("usage before grants: invoice %s, sum of per-instance estimates %s; invoice usage total (net of the %s grant credit) %s = margin snapshot %v − %v",
		invoiceGross, money.Round(naiveTotal, 2), decSub(t, total, invoiceGross), total, margin.Revenue, margin.GrantCoveredRevenue)

	// The server's meters hold the same units and grant coverage for both customers.
	var differ int
	if err := pool.QueryRow(ctx, `select count(*) from (
		select entitlement, units, grant_covered from meter_aggregates where customer_id = 'solo'
		except
		select entitlement, units, grant_covered from meter_aggregates where customer_id = 'fleet') d`).Scan(&differ); err != nil {
		t.Fatal(err)
	}
	if differ != 0 {
		t.Errorf("%d of solo's meters differ from fleet's", differ)
	}
}
