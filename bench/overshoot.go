package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// FleetPolicy is a one-plan policy whose entitlement "api" has a hard, non-resetting
// limit of limit units of credit "req", and whose entitlement "chat" (credit "tok", a
// rune each) has a soft limit far away, for a spend cap to stop.
func FleetPolicy(limit int) []byte {
	return fmt.Appendf(nil, `{"policy": {"credits": {"req": {}, "tok": {"price": {"amount": 1}}}, "plans": {"fleet": {"default": true,
  "entitlements": {"api": {"description": "requests (hard limit)", "limit": {"credit": "req", "value": %d}},
    "chat": {"description": "tokens (soft limit; an org's spend cap stops them)", "limit": {"credit": "tok", "mode": "soft", "value": 1000000000000}}}}}}}`, limit)
}

// OvershootOptions shape a fleet-overshoot run.
type OvershootOptions struct {
	Instances int     // N SDK instances serving one customer
	Limit     int     // L, the entitlement's hard limit (FleetPolicy(L) must be active)
	Rate      float64 // r: Allow(1) calls per second per instance; 0: as fast as possible
	// Flush and Refresh are WithFlushInterval and WithRefreshInterval (0: the defaults).
	Flush, Refresh time.Duration
	// Duration of the calls (0: long enough for the fleet to reach L and for every
	// instance to see it: L/(N·r) + 3·W + 1 s).
	Duration time.Duration
	// Mode is the fleet mode (limitr.Exact: allowance leases; limitr.Bounded).
	Mode limitr.FleetMode
	// Skew, when > 0, is the share of the fleet's calls the first instance makes (0.9:
	// 90 %); the others share the rest evenly. The fleet's total rate stays N·r.
	Skew float64
	// Cap makes L a shared org spend cap instead of a hard limit: an org holds a cap of
	// L runes (set through the REST API) shared with its members, and each instance
	// calls Allow(1) on "chat" (a rune a unit) for a member of its own.
	Cap bool
}

// OvershootResult compares the units a fleet admitted over a hard limit with the bound
// the SDK documents (Cloud): usage ≤ L + (N−1)·r·W, W = F + max(F, R) + T, and never
// more than N·L.
type OvershootResult struct {
	Instances, Limit int
	Paced            float64 // the offered rate per instance (0: as fast as possible)
	Flush, Refresh   time.Duration
	T                time.Duration   // measured delivery latency: POST usage + GET state, the slowest of 20 probes
	W                time.Duration   // F + max(F, R) + T
	Rate             float64         // measured r: the fastest instance's admission rate until its first denial
	Admitted         []int64         // per instance, counted by the caller
	FirstDeny        []time.Duration // per instance, since the start (0: never denied)
	Calls            []int64         // per instance
	Elapsed          time.Duration
	LocalTotal       int64  // Σ Admitted
	Server           string // the customer's committed units (GET /v1/sdk/customers/{id}/state) after Close
	Aggregated       string // meter_aggregates after the worker drained (if a pool was given)
	Overshoot        int64  // Server − L
	Bound            int64  // min(L + (N−1)·r·W, N·L); L in mode Exact
	Mode             string // "exact" or "bounded"
	Skew             float64
	Cap              bool // L is a shared org cap (Server: the cap's committed consumption)
	// Lease waits (mode Exact): calls that waited for a lease, the share of all calls,
	// the slowest instance's p99 wait, and the lease requests sent.
	LeaseWaits    int64
	WaitShare     float64
	WaitP99       time.Duration
	LeaseRequests int64
}

// Meets reports whether the run kept its budget: in mode Exact the server ends at
// the limit exactly; in mode Bounded the overshoot stays within the bound.
func (r OvershootResult) Meets() bool {
	if r.Mode == "exact" {
		return r.Overshoot == 0
	}
	return r.Overshoot <= r.Bound-int64(r.Limit)
}

func (r OvershootResult) String() string {
	mode := "as fast as possible"
	if r.Paced > 0 {
		mode = fmt.Sprintf("paced at %.0f/s per instance", r.Paced)
	}
	if r.Skew > 0 {
		mode += fmt.Sprintf(", %.0f %% on one instance", r.Skew*100)
	}
	if r.Cap {
		mode += ", a shared org cap of L runes, one member per instance"
	}
	if r.Mode == "exact" {
		return fmt.Sprintf("overshoot exact N=%d L=%d F=%s (%s): admitted %v = %d, server %s (aggregated %s) → overshoot %d (budget 0); %d lease requests; %d of %d calls waited for a lease (%.3f %%), p99 wait %s; first denials %v",
			r.Instances, r.Limit, r.Flush, mode, r.Admitted, r.LocalTotal, r.Server, r.Aggregated, r.Overshoot,
			r.LeaseRequests, r.LeaseWaits, sum(r.Calls), r.WaitShare*100, ms(r.WaitP99), r.roundedDenials())
	}
	return fmt.Sprintf("overshoot bounded N=%d L=%d F=%s R=%s (%s): admitted %v = %d, server %s (aggregated %s) → overshoot %d; measured r=%.0f/s T=%s W=%s → bound min(L+(N−1)·r·W, N·L) = %d (overshoot ≤ %d); first denials %v",
		r.Instances, r.Limit, r.Flush, r.Refresh, mode, r.Admitted, r.LocalTotal, r.Server, r.Aggregated, r.Overshoot,
		r.Rate, ms(r.T), ms(r.W), r.Bound, r.Bound-int64(r.Limit), r.roundedDenials())
}

func sum(xs []int64) int64 {
	var s int64
	for _, x := range xs {
		s += x
	}
	return s
}

func (r OvershootResult) roundedDenials() []time.Duration {
	out := make([]time.Duration, len(r.FirstDeny))
	for i, d := range r.FirstDeny {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}

// Overshoot runs opt.Instances cloud-mode SDKs against one new customer of t (whose
// active policy is FleetPolicy(opt.Limit)), each calling Allow(1) on "api" at
// opt.Rate, closes them (flushing their usage) and compares the units the server
// committed with the documented bound. With pool, it also waits for the worker to
// aggregate and reads meter_aggregates.
func Overshoot(ctx context.Context, c *http.Client, t Target, pool *pgxpool.Pool, opt OvershootOptions) (OvershootResult, error) {
	r := OvershootResult{Instances: opt.Instances, Limit: opt.Limit, Paced: opt.Rate, Flush: opt.Flush, Refresh: opt.Refresh,
		Mode: "exact", Skew: opt.Skew}
	if opt.Mode == limitr.Bounded {
		r.Mode = "bounded"
	}
	if r.Flush <= 0 {
		r.Flush = limitr.DefaultFlushInterval
	}
	if r.Refresh <= 0 {
		r.Refresh = limitr.DefaultRefreshInterval
	}
	run := randHex(4)
	cust, probe := "fleet-"+run, "probe-"+run
	if err := AddCustomers(ctx, c, t, []string{cust, probe}, "", 2); err != nil {
		return r, err
	}
	r.Cap = opt.Cap
	ent, callers := "api", make([]string, opt.Instances)
	for i := range callers {
		callers[i] = cust
	}
	if opt.Cap {
		// cust is the org; each instance calls for a member of its own.
		ent = "chat"
		if err := orgBudget(ctx, c, t, cust, callers, opt.Limit); err != nil {
			return r, err
		}
	}
	// T: what one instance's unit needs to reach another after it was cut: the POST
	// that commits it and the GET that reads the committed totals.
	var probes []time.Duration
	for i := 1; i <= 20; i++ {
		b := wire.UsageBatch{InstanceID: "probe-" + run, Sequence: int64(i), SentAt: time.Now().UTC(),
			Deltas: []wire.UsageDelta{{Customer: probe, Entitlement: "api", Credit: "req", PeriodStart: time.Now().UTC().Truncate(time.Hour),
				Units: "1", Overhead: "0", Price: "0", Calls: 1}}}
		start := time.Now()
		if err := PostUsage(ctx, c, t, Encode(b), int64(i), 1); err != nil {
			return r, fmt.Errorf("probe: %w", err)
		}
		if _, err := CustomerState(ctx, c, t, probe); err != nil {
			return r, fmt.Errorf("probe: %w", err)
		}
		probes = append(probes, time.Since(start))
	}
	r.T = NewDist(probes).Max
	r.W = r.Flush + max(r.Flush, r.Refresh) + r.T

	ps, err := ConnectSDKs(ctx, t, opt.Instances, limitr.WithFlushInterval(r.Flush), limitr.WithRefreshInterval(r.Refresh),
		limitr.WithFleetMode(opt.Mode))
	if err != nil {
		return r, err
	}
	closed := false
	defer func() {
		if !closed {
			_ = CloseSDKs(ps)
		}
	}()
	for i, p := range ps { // hydrate the customer everywhere before the clock starts
		if _, err := p.Limit(ctx, callers[i], ent); err != nil {
			return r, fmt.Errorf("sdk %d: %w", i, err)
		}
	}
	dur := opt.Duration
	if dur <= 0 {
		reach := time.Duration(0)
		if opt.Rate > 0 {
			reach = time.Duration(float64(opt.Limit) / (float64(opt.Instances) * opt.Rate) * float64(time.Second))
		}
		dur = reach + 3*r.W + time.Second
	}
	r.Admitted = make([]int64, len(ps))
	r.FirstDeny = make([]time.Duration, len(ps))
	r.Calls = make([]int64, len(ps))
	errs := make([]error, len(ps))
	beforeDeny := make([]int64, len(ps))
	start := time.Now()
	end := start.Add(dur)
	var wg sync.WaitGroup
	for i, p := range ps {
		rate := opt.Rate
		if opt.Skew > 0 && opt.Instances > 1 {
			// The fleet's N·r calls a second, skew of them on the first instance.
			rate = opt.Rate * float64(opt.Instances) * (1 - opt.Skew) / float64(opt.Instances-1)
			if i == 0 {
				rate = opt.Rate * float64(opt.Instances) * opt.Skew
			}
		}
		wg.Go(func() {
			var calls, admitted int64
			defer func() { r.Calls[i], r.Admitted[i] = calls, admitted }()
			one := func() bool {
				ok, err := p.Allow(ctx, callers[i], ent, 1)
				if err != nil {
					errs[i] = err
					return false
				}
				calls++
				if ok {
					admitted++
				} else if r.FirstDeny[i] == 0 {
					r.FirstDeny[i] = time.Since(start)
					beforeDeny[i] = admitted
				}
				return true
			}
			for {
				now := time.Now()
				if !now.Before(end) {
					return
				}
				if rate <= 0 {
					for range 256 {
						if !one() {
							return
						}
					}
					continue
				}
				due := int64(now.Sub(start).Seconds()*rate) - calls
				for range due {
					if !one() {
						return
					}
				}
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	r.Elapsed = time.Since(start)
	for i, err := range errs {
		if err != nil {
			return r, fmt.Errorf("sdk %d: %w", i, err)
		}
	}
	for i := range ps {
		r.LocalTotal += r.Admitted[i]
		until := r.Elapsed
		if r.FirstDeny[i] > 0 {
			until = r.FirstDeny[i]
		}
		// The admission rate until the first denial is the r of the bound.
		n := r.Admitted[i]
		if r.FirstDeny[i] > 0 {
			n = beforeDeny[i]
		}
		r.Rate = max(r.Rate, float64(n)/until.Seconds())
	}
	for _, p := range ps {
		s := p.SyncStats()
		r.LeaseWaits += s.LeaseWaits
		r.LeaseRequests += s.LeaseRequests
		r.WaitP99 = max(r.WaitP99, s.LeaseWaitP99)
	}
	if n := sum(r.Calls); n > 0 {
		r.WaitShare = float64(r.LeaseWaits) / float64(n)
	}
	closed = true
	if err := CloseSDKs(ps); err != nil {
		return r, fmt.Errorf("close: %w", err)
	}
	if opt.Cap {
		if r.Server, err = capSpent(ctx, c, t, cust); err != nil {
			return r, err
		}
	} else {
		st, err := CustomerState(ctx, c, t, cust)
		if err != nil {
			return r, err
		}
		r.Server = "0"
		for _, m := range st.Meters["api"] {
			r.Server = m.Units
		}
	}
	srv, err := strconv.ParseInt(r.Server, 10, 64)
	if err != nil {
		return r, fmt.Errorf("server units %q: %w", r.Server, err)
	}
	if srv != r.LocalTotal {
		return r, fmt.Errorf("the server committed %d units, the SDKs admitted %d", srv, r.LocalTotal)
	}
	r.Overshoot = srv - int64(opt.Limit)
	bound := float64(opt.Limit) + float64(opt.Instances-1)*r.Rate*r.W.Seconds()
	r.Bound = min(int64(bound), int64(opt.Instances*opt.Limit))
	if r.Mode == "exact" {
		r.Bound = int64(opt.Limit)
	}
	if pool != nil {
		deadline := time.Now().Add(time.Minute)
		for {
			s, err := aggregate.Measure(ctx, pool)
			if err != nil {
				return r, err
			}
			if s.Rows == 0 {
				break
			}
			if time.Now().After(deadline) {
				return r, fmt.Errorf("backlog of %d rows not aggregated after a minute", s.Rows)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err := pool.QueryRow(ctx, `select coalesce(sum(units), 0)::text from meter_aggregates where customer_id = $1 and entitlement = 'api'`,
			cust).Scan(&r.Aggregated); err != nil {
			return r, err
		}
	}
	return r, nil
}

// orgBudget makes org an org with a spend cap of limit runes shared with its members,
// and creates one member per entry of members (filling in their ids).
func orgBudget(ctx context.Context, c *http.Client, t Target, org string, members []string, limit int) error {
	base := t.BaseURL + "/v1/environments/" + url.PathEscape(t.Environment) + "/customers"
	if err := call(ctx, c, http.MethodPatch, base+"/"+url.PathEscape(org), t.SDKKey, "application/json", []byte(`{"type": "org"}`), http.StatusOK, nil); err != nil {
		return fmt.Errorf("org: %w", err)
	}
	for i := range members {
		members[i] = fmt.Sprintf("%s-member-%d", org, i)
		b, _ := json.Marshal(map[string]any{"id": members[i], "refs": []string{org}})
		if err := call(ctx, c, http.MethodPost, base, t.SDKKey, "application/json", b, http.StatusCreated, nil); err != nil {
			return fmt.Errorf("member: %w", err)
		}
	}
	b := fmt.Appendf(nil, `{"credit": "rune", "value": %d, "shared": true}`, limit)
	if err := call(ctx, c, http.MethodPut, base+"/"+url.PathEscape(org)+"/caps/budget", t.SDKKey, "application/json", b, http.StatusCreated, nil); err != nil {
		return fmt.Errorf("cap: %w", err)
	}
	return nil
}

// capSpent is the committed consumption of org's cap "budget", as the server reports it.
func capSpent(ctx context.Context, c *http.Client, t Target, org string) (string, error) {
	var cp wire.CustomerCap
	u := t.BaseURL + "/v1/environments/" + url.PathEscape(t.Environment) + "/customers/" + url.PathEscape(org) + "/caps/budget"
	if err := call(ctx, c, http.MethodGet, u, t.SDKKey, "", nil, http.StatusOK, &cp); err != nil {
		return "", fmt.Errorf("cap: %w", err)
	}
	total := num.Zero
	for _, us := range cp.Usage {
		v, err := num.Parse(us.Units)
		if err != nil {
			return "", fmt.Errorf("cap usage %q: %w", us.Units, err)
		}
		if total, err = total.Add(v); err != nil {
			return "", err
		}
	}
	return total.String(), nil
}
