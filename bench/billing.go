package bench

// Closing a billing period (DESIGN.md, performance budgets): N customers on a test clock,
// each with a plan fee and five metered entitlements of different price models, all
// invoiced by one billing.Service.Close that drafts and finalizes every invoice.
// bench/billingload is the command; bench/README.md has the figures.

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/customers"
	"github.com/limitr/limitr/internal/policies/doctree"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
)

// BillingPolicy is the policy the billing benchmark publishes: one default plan with a
// plan fee and five metered entitlements that reset monthly on the customer's anchor,
// one per price model (flat, tiered, volume, stairstep, and a credit priced through the
// exchange). It is internal/billing/testdata/policy.yaml's basic plan with a stairstep
// meter instead of the seat level.
const BillingPolicy = `policy:
  credits:
    plan_fee: { price: { amount: 20 } }
    token: { price: { amount: 0.00002 } }
    image:
      pricing_model: tiered
      tiers:
        - { up_to: 100, price: { amount: 0.04 } }
        - { up_to: 1000, price: { amount: 0.03 } }
        - { price: { amount: 0.015 } }
    minute:
      pricing_model: volume
      tiers:
        - { up_to: 1000, price: { amount: 0.012 } }
        - { up_to: 10000, price: { amount: 0.009 } }
        - { price: { amount: 0.007 } }
    render:
      pricing_model: stairstep
      tiers:
        - { up_to: 5, price: { amount: 25 } }
        - { up_to: 20, price: { amount: 80 } }
        - { price: { amount: 200 } }
    ai_credit: { description: 'customer-facing credit, priced through the exchange' }
  exchange:
    rune: { value: 1, currency: usd }
    ai_credit: { value: 0.0125, currency: rune }
  plans:
    standard:
      default: true
      entitlements:
        subscription: { limit: { credit: plan_fee, mode: soft, value: 0 } }
        tokens: { limit: { credit: token, mode: soft, value: 1000000, resets: true, reset_sch: 'monthly:anchor' } }
        images: { limit: { credit: image, mode: soft, value: 50, resets: true, reset_sch: 'monthly:anchor' } }
        minutes: { limit: { credit: minute, mode: soft, value: 0, resets: true, reset_sch: 'monthly:anchor' } }
        renders: { limit: { credit: render, mode: soft, value: 2, resets: true, reset_sch: 'monthly:anchor' } }
        assistant: { limit: { credit: ai_credit, mode: soft, value: 1000, resets: true, reset_sch: 'monthly:anchor' } }
`

// BillingMeter is one meter every benchmark customer has, with the amount its usage is
// worth on the invoice, worked out by hand from BillingPolicy.
type BillingMeter struct {
	Entitlement, Credit, Units string
	Cents                      int64
}

// BillingMeters is every customer's usage in its first period.
var BillingMeters = []BillingMeter{
	{"tokens", "token", "1600000", 1200},     // 600,000 over × 0.00002 = 12.00
	{"images", "image", "1250", 3400},        // 1,200 over: 100 × 0.04 + 900 × 0.03 + 200 × 0.015 = 34.00
	{"minutes", "minute", "12345", 8642},     // 12,345 over, all at the volume tier 0.007 = 86.415 → 86.42
	{"renders", "render", "9", 8000},         // 7 over: the stairstep tier up to 20 = 80.00
	{"assistant", "ai_credit", "5000", 5000}, // 4,000 over × 0.0125 runes × 1 USD = 50.00
}

// BillingPlanFeeCents is the plan fee (no trial: charged in the first period).
const BillingPlanFeeCents = 2000

// BillingInvoiceCents is what every benchmark invoice totals, in cents.
func BillingInvoiceCents() int64 {
	c := int64(BillingPlanFeeCents)
	for _, m := range BillingMeters {
		c += m.Cents
	}
	return c
}

// BillingOptions shape one billing run.
type BillingOptions struct {
	Customers int
	// SampleEvery is how often the Go heap is sampled during Close (0: 10 ms).
	SampleEvery time.Duration
	// Profile, when set, is started right before Close and its stop function called
	// right after.
	Profile func() (stop func())
	// Analyze runs ANALYZE after the bulk load, as autovacuum would.
	Analyze bool
}

// BillingResult is one run: Close of N customers' first period, its memory, and what
// the database holds afterwards.
type BillingResult struct {
	Customers int                 `json:"customers"`
	Load      time.Duration       `json:"load_ns"` // bulk load of customers and meters
	Took      time.Duration       `json:"took_ns"` // billing.Service.Close
	Close     billing.CloseResult `json:"close"`
	// LoadBefore and LoadAfter are the machine's 1-minute load average before and
	// after Close (other work shares the CPUs).
	LoadBefore string        `json:"load_before"`
	LoadAfter  string        `json:"load_after"`
	CPU        time.Duration `json:"cpu_ns"` // user + system CPU of this process during Close
	// PGCPU is the user + system CPU the database's backends used during Close (read
	// from /proc: Postgres must run on this machine; 0 when it cannot be read).
	PGCPU time.Duration `json:"pg_cpu_ns"`

	HeapBefore   uint64       `json:"heap_inuse_before"` // runtime HeapInuse before Close, after a GC
	HeapPeak     uint64       `json:"heap_inuse_peak"`   // highest HeapInuse sampled during Close
	HeapSamples  int          `json:"heap_samples"`
	RSSBefore    uint64       `json:"rss_before"`     // VmRSS before Close
	RSSPeak      uint64       `json:"rss_peak"`       // VmHWM after Close (reset before it)
	RSSPeakReset bool         `json:"rss_peak_reset"` // false: VmHWM could not be reset, so it covers the whole process
	TotalAlloc   uint64       `json:"total_alloc"`    // bytes allocated during Close
	Mallocs      uint64       `json:"mallocs"`        // objects allocated during Close
	NumGC        uint32       `json:"gc_cycles"`      // GC cycles during Close
	Check        BillingCheck `json:"check"`
}

// BillingCheck is what the database holds after Close.
type BillingCheck struct {
	Invoices, Finalized, Distinct, MinSeq, MaxSeq, BadNumbers, BadTotals int64
	Audit, Feed, Billed                                                  int64
	Sum, WantSum                                                         string
}

// Problems lists what is wrong with the invoices of n customers.
func (c BillingCheck) Problems(n int) []string {
	var out []string
	N := int64(n)
	if c.Invoices != N || c.Finalized != N {
		out = append(out, fmt.Sprintf("%d invoices, %d finalized, want %d", c.Invoices, c.Finalized, N))
	}
	if c.Distinct != N || c.MinSeq != 1 || c.MaxSeq != N {
		out = append(out, fmt.Sprintf("numbers %d..%d (%d distinct), want 1..%d without gaps", c.MinSeq, c.MaxSeq, c.Distinct, N))
	}
	if c.BadNumbers != 0 {
		out = append(out, fmt.Sprintf("%d invoice numbers are not INV-<sequence>", c.BadNumbers))
	}
	if c.Sum != c.WantSum || c.BadTotals != 0 {
		out = append(out, fmt.Sprintf("sum of totals %s, want %s (%d invoices with another total)", c.Sum, c.WantSum, c.BadTotals))
	}
	if c.Audit != N || c.Feed != N {
		out = append(out, fmt.Sprintf("%d audit and %d change-feed entries, want %d each", c.Audit, c.Feed, N))
	}
	if c.Billed != N*int64(len(BillingMeters)) {
		out = append(out, fmt.Sprintf("%d billed meter periods, want %d", c.Billed, N*int64(len(BillingMeters))))
	}
	return out
}

// Rate is invoices finalized per second.
func (r BillingResult) Rate() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Close.Finalized) / r.Took.Seconds()
}

// CPUPerInvoice is the CPU this process and the Postgres backends used per invoice:
// what closing costs, whatever else the machine was doing.
func (r BillingResult) CPUPerInvoice() time.Duration {
	if r.Close.Finalized == 0 {
		return 0
	}
	return (r.CPU + r.PGCPU) / time.Duration(r.Close.Finalized)
}

func (r BillingResult) String() string {
	reset := ""
	if !r.RSSPeakReset {
		reset = " (not reset: whole process)"
	}
	return fmt.Sprintf("billing close N=%d: %d drafted, %d finalized in %s = %.0f invoices/s (bulk load %s; load average %s → %s)\n"+
		"  memory: heap in use %s before, peak %s (%d samples); RSS %s before, peak (VmHWM) %s%s; allocated %s in %d objects, %d GCs\n"+
		"  CPU: this process %s (%.2f cores), Postgres backends %s (%.2f cores): %.0f µs per invoice",
		r.Customers, r.Close.Drafted, r.Close.Finalized, r.Took.Round(time.Millisecond), r.Rate(), r.Load.Round(time.Millisecond),
		r.LoadBefore, r.LoadAfter,
		mib(r.HeapBefore), mib(r.HeapPeak), r.HeapSamples, mib(r.RSSBefore), mib(r.RSSPeak), reset, mib(r.TotalAlloc), r.Mallocs, r.NumGC,
		r.CPU.Round(time.Millisecond), r.CPU.Seconds()/max(r.Took.Seconds(), 1e-9),
		r.PGCPU.Round(time.Millisecond), r.PGCPU.Seconds()/max(r.Took.Seconds(), 1e-9), r.CPUPerInvoice().Seconds()*1e6)
}

func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// billingClock is the test clock's time when the customers are created: their first
// period is [billingClock, +1 month).
var billingClock = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// CloseBilling creates a fresh database next to adminURL, bulk-loads opt.Customers
// customers on a test clock with BillingMeters each, and times billing.Service.Close
// at the end of their first period plus the grace period: every customer gets one
// finalized invoice. It then checks the invoices, and drops the database.
func CloseBilling(ctx context.Context, adminURL string, opt BillingOptions) (BillingResult, error) {
	res := BillingResult{Customers: opt.Customers}
	if opt.Customers <= 0 {
		return res, fmt.Errorf("billing: %d customers", opt.Customers)
	}
	pool, closeDB, err := freshPool(ctx, adminURL)
	if err != nil {
		return res, err
	}
	defer closeDB()

	env, pols, err := stagingWithPolicy(ctx, pool)
	if err != nil {
		return res, err
	}
	svc := billing.NewService(pool, pols, customers.NewService(pool, pols, nil))
	clock, err := svc.CreateTestClock(ctx, env, billing.TestClockInput{FrozenTime: billingClock.Format(time.RFC3339), Name: "bench"})
	if err != nil {
		return res, err
	}
	set, err := svc.Settings(ctx, env)
	if err != nil {
		return res, err
	}

	start := time.Now()
	if err := loadBillingCustomers(ctx, pool, env, clock.ID, opt.Customers); err != nil {
		return res, err
	}
	if opt.Analyze {
		if _, err := pool.Exec(ctx, "analyze"); err != nil {
			return res, err
		}
	}
	res.Load = time.Since(start)

	// The first period ends a month after the clock's time; its invoice is due for
	// finalization after the grace period.
	now := billingClock.AddDate(0, 1, 0).Add(set.Grace).Add(time.Second)
	runtime.GC()
	debug.FreeOSMemory()
	res.RSSPeakReset = resetPeakRSS()
	res.RSSBefore, _ = procStatus("VmRSS")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res.HeapBefore = before.HeapInuse
	every := opt.SampleEvery
	if every <= 0 {
		every = 10 * time.Millisecond
	}
	stopSampling := make(chan struct{})
	var sampler sync.WaitGroup
	peak, samples := res.HeapBefore, 0
	sampler.Go(func() {
		// HeapInuse without stopping the world: runtime/metrics gives it as heap
		// objects plus unused heap (runtime.MemStats documents the same sum).
		m := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-stopSampling:
				return
			case <-t.C:
				metrics.Read(m)
				peak, samples = max(peak, m[0].Value.Uint64()+m[1].Value.Uint64()), samples+1
			}
		}
	})
	stop := func() {}
	if opt.Profile != nil {
		stop = opt.Profile()
	}
	res.LoadBefore = loadAverage()
	pg0 := backendCPU(ctx, pool)
	cpu0 := cpuTime()
	start = time.Now()
	res.Close, err = svc.Close(ctx, env, clock.ID, now)
	res.Took = time.Since(start)
	res.CPU = cpuTime() - cpu0
	res.LoadAfter = loadAverage()
	for pid, t := range backendCPU(ctx, pool) {
		res.PGCPU += t - pg0[pid]
	}
	stop()
	close(stopSampling)
	sampler.Wait()
	runtime.ReadMemStats(&after)
	res.HeapPeak, res.HeapSamples = max(peak, after.HeapInuse), samples
	res.RSSPeak, _ = procStatus("VmHWM")
	res.TotalAlloc = after.TotalAlloc - before.TotalAlloc
	res.Mallocs = after.Mallocs - before.Mallocs
	res.NumGC = after.NumGC - before.NumGC
	if err != nil {
		return res, fmt.Errorf("billing: close: %w", err)
	}
	res.Check, err = checkBilling(ctx, pool, env, set.InvoicePrefix, opt.Customers)
	return res, err
}

// loadBillingCustomers writes n customers on the clock with COPY (the database's
// trigger records their plan history at the clock's time), then their meters.
func loadBillingCustomers(ctx context.Context, pool *pgxpool.Pool, env store.Environment, clock string, n int) error {
	clockID, err := uuid.Parse(clock)
	if err != nil {
		return err
	}
	// pgtype.UUID: pgx encodes uuid.UUID through driver.Valuer and a string.
	tenant, envID, clk := pgtype.UUID{Bytes: env.TenantID, Valid: true}, pgtype.UUID{Bytes: env.ID, Valid: true}, pgtype.UUID{Bytes: clockID, Valid: true}
	uids := make([]pgtype.UUID, n)
	for i := range uids {
		uids[i] = pgtype.UUID{Bytes: uuid.New(), Valid: true}
	}
	id := func(i int) string { return fmt.Sprintf("cus_%07d", i) }
	i := 0
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"customers"},
		[]string{"tenant_id", "environment_id", "id", "plan", "metadata", "billing_anchor", "created_at", "uid", "test_clock_id"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n {
				return nil, nil
			}
			meta := fmt.Sprintf(`{"name":"Customer %d","email":"billing+%d@example.com"}`, i, i)
			row := []any{tenant, envID, id(i), "standard", meta, billingClock, billingClock, uids[i], clk}
			i++
			return row, nil
		}))
	if err != nil {
		return fmt.Errorf("billing: copy customers: %w", err)
	}
	i = 0
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"meter_aggregates"},
		[]string{"tenant_id", "environment_id", "customer_id", "customer_uid", "entitlement", "period_start", "credit", "units", "calls"},
		pgx.CopyFromFunc(func() ([]any, error) {
			if i == n*len(BillingMeters) {
				return nil, nil
			}
			c, m := i/len(BillingMeters), BillingMeters[i%len(BillingMeters)]
			i++
			return []any{tenant, envID, id(c), uids[c], m.Entitlement, billingClock, m.Credit, m.Units, int64(100)}, nil
		}))
	if err != nil {
		return fmt.Errorf("billing: copy meters: %w", err)
	}
	var plans int
	if err := pool.QueryRow(ctx, `select count(*) from customer_plan_history h join customers c on c.uid = h.customer_uid
		where c.environment_id = $1 and h.effective_at = $2 and h.plan = 'standard'`, env.ID, billingClock).Scan(&plans); err != nil {
		return err
	}
	if plans != n {
		return fmt.Errorf("billing: %d plan history rows at the clock's time, want %d", plans, n)
	}
	return nil
}

func checkBilling(ctx context.Context, pool *pgxpool.Pool, env store.Environment, prefix string, n int) (BillingCheck, error) {
	c := BillingCheck{}
	cents := BillingInvoiceCents()
	want := cents * int64(n)
	c.WantSum = fmt.Sprintf("%d.%02d", want/100, want%100)
	each := fmt.Sprintf("%d.%02d", cents/100, cents%100)
	err := pool.QueryRow(ctx, `select count(*), count(*) filter (where status = 'finalized'), count(distinct sequence),
			coalesce(min(sequence), 0), coalesce(max(sequence), 0),
			count(*) filter (where number is distinct from $3 || '-' || lpad(sequence::text, 6, '0')),
			count(*) filter (where total <> $4::numeric), coalesce(sum(total), 0)::text
		from invoices where tenant_id = $1 and environment_id = $2`, env.TenantID, env.ID, prefix, each).
		Scan(&c.Invoices, &c.Finalized, &c.Distinct, &c.MinSeq, &c.MaxSeq, &c.BadNumbers, &c.BadTotals, &c.Sum)
	if err != nil {
		return c, fmt.Errorf("billing: check invoices: %w", err)
	}
	err = pool.QueryRow(ctx, `select
			(select count(*) from audit_log where tenant_id = $1 and environment_id = $2 and action = 'invoice.finalized'),
			(select count(*) from change_feed where tenant_id = $1 and environment_id = $2 and kind = 'invoice'
				and payload->>'action' = 'invoice.finalized' and payload->'data'->>'status' = 'finalized'),
			(select count(*) from billed_meter_periods b join invoices i on i.id = b.invoice_id
				where i.tenant_id = $1 and i.environment_id = $2)`, env.TenantID, env.ID).
		Scan(&c.Audit, &c.Feed, &c.Billed)
	if err != nil {
		return c, fmt.Errorf("billing: check records: %w", err)
	}
	return c, nil
}

// resetPeakRSS resets the process's VmHWM to its current RSS (Linux ≥ 4.0).
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// procStatus reads a "kB" field of /proc/self/status, in bytes.
func procStatus(field string) (uint64, bool) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, false
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != field {
			continue
		}
		kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
		return kb << 10, err == nil
	}
	return 0, false
}

// backendCPU reads the user + system CPU of every backend connected to the pool's
// database from /proc/<pid>/stat (clock ticks of 10 ms).
func backendCPU(ctx context.Context, pool *pgxpool.Pool) map[int32]time.Duration {
	out := map[int32]time.Duration{}
	rows, err := pool.Query(ctx, `select pid from pg_stat_activity where datname = current_database()`)
	if err != nil {
		return out
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return out
	}
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command (which may hold spaces), from field 3: utime and
		// stime are fields 14 and 15.
		_, rest, ok := strings.Cut(string(b), ") ")
		f := strings.Fields(rest)
		if !ok || len(f) < 13 {
			continue
		}
		u, err1 := strconv.ParseInt(f[11], 10, 64)
		s, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 == nil && err2 == nil {
			out[pid] = time.Duration(u+s) * 10 * time.Millisecond
		}
	}
	return out
}

// loadAverage is the 1-minute load average ("?" when unknown).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
		return f[0]
	}
	return "?"
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// stagingWithPolicy creates a tenant and publishes BillingPolicy to its staging
// environment (not live: test clocks are allowed there).
func stagingWithPolicy(ctx context.Context, pool *pgxpool.Pool) (store.Environment, *pgstore.Service, error) {
	boot, err := tenancy.NewService(pool).CreateTenant(ctx, tenancy.CreateTenantInput{Slug: "bench-" + randHex(6)})
	if err != nil {
		return store.Environment{}, nil, err
	}
	var env store.Environment
	for _, e := range boot.Environments {
		if e.Name == "staging" {
			env = e
		}
	}
	if env.ID == uuid.Nil || env.Live {
		return env, nil, fmt.Errorf("bench: no non-live staging environment in %+v", boot.Environments)
	}
	pols := pgstore.NewService(pool, nil)
	created, err := pols.Create(ctx, env.TenantID, pgstore.CreateInput{Format: doctree.FormatYAML, Source: []byte(BillingPolicy)})
	if err != nil {
		return env, nil, fmt.Errorf("bench: create policy: %w", err)
	}
	if _, err := pols.Publish(ctx, env, pgstore.PublishInput{Version: &created.Version.Number}); err != nil {
		return env, nil, fmt.Errorf("bench: publish policy: %w", err)
	}
	return env, pols, nil
}
