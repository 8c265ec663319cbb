package bench

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// Meter is an entitlement usage is generated for, with its credit and the provider
// cost and price of one unit in millionths of a rune.
type Meter struct {
	Entitlement, Credit string
	OverheadMicro       int64
	PriceMicro          int64
}

// QuickstartMeters are the metered entitlements of examples/policies/quickstart-ai.json
// (starter plan): input and output tokens with their per-token cost and price.
var QuickstartMeters = []Meter{
	{"ai-chat-input", "claude-sonnet-4-input", 3, 4},
	{"ai-chat-output", "claude-sonnet-4-output", 15, 20},
}

// Workload generates usage batches the way SDK instances cut them: each batch holds
// distinct (customer, entitlement, period) meters, each delta the sum of a few calls.
type Workload struct {
	Customers   []string
	Meters      []Meter
	PeriodStart time.Time // the meters' current period (daily: today's UTC midnight)
	BatchSize   int       // deltas per batch (the SDK cuts at most wire.MaxDeltas)
	rng         *rand.Rand
	cursor      int
}

// NewWorkload returns a workload over customers × meters for today's daily period.
func NewWorkload(customers []string, meters []Meter, batchSize int, seed uint64) *Workload {
	return &Workload{Customers: customers, Meters: meters, BatchSize: batchSize,
		PeriodStart: time.Now().UTC().Truncate(24 * time.Hour), rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
}

// Batch returns the next batch of instance's stream, with sequence seq. A batch's
// meters are consecutive in customer × meter order from a moving cursor, so no meter
// repeats within a batch while BatchSize ≤ customers × meters.
func (w *Workload) Batch(instance string, seq int64) wire.UsageBatch {
	b := wire.UsageBatch{InstanceID: instance, Sequence: seq, SentAt: time.Now().UTC(), PolicyVersion: 1,
		Deltas: make([]wire.UsageDelta, w.BatchSize)}
	space := len(w.Customers) * len(w.Meters)
	for i := range b.Deltas {
		k := (w.cursor + i) % space
		c, m := w.Customers[k/len(w.Meters)], w.Meters[k%len(w.Meters)]
		units := 1 + w.rng.Int64N(4000) // tokens of a few calls
		b.Deltas[i] = wire.UsageDelta{Customer: c, Entitlement: m.Entitlement, Credit: m.Credit, PeriodStart: w.PeriodStart,
			Units: strconv.FormatInt(units, 10), Overhead: micro(units * m.OverheadMicro), Price: micro(units * m.PriceMicro),
			Calls: 1 + w.rng.Int64N(20)}
	}
	w.cursor = (w.cursor + w.BatchSize) % space
	return b
}

// micro writes v millionths as an exact decimal ("0.012", "3").
func micro(v int64) string {
	s := fmt.Sprintf("%d.%06d", v/1_000_000, v%1_000_000)
	for s[len(s)-1] == '0' {
		s = s[:len(s)-1]
	}
	if s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	return s
}

// Encode gzips a batch's JSON, as the SDK sends it.
func Encode(b wire.UsageBatch) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(b); err != nil {
		panic(err)
	}
	if err := zw.Close(); err != nil {
		panic(err)
	}
	return buf.Bytes()
}

// PostUsage sends one gzipped batch to POST /v1/sdk/usage and checks the answer: 200
// with the batch's sequence, not a duplicate, every delta accepted.
func PostUsage(ctx context.Context, c *http.Client, t Target, body []byte, seq int64, deltas int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.BaseURL+wire.PathUsage, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+t.SDKKey)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 1<<16))
	if err != nil {
		return err
	}
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %.300s", res.StatusCode, data)
	}
	var ack wire.UsageAck
	if err := json.Unmarshal(data, &ack); err != nil {
		return err
	}
	if ack.Sequence != seq || ack.Duplicate || ack.Accepted != deltas {
		return fmt.Errorf("unexpected ack %+v for sequence %d with %d deltas", ack, seq, deltas)
	}
	return nil
}

// IngestOptions shape an ingest run.
type IngestOptions struct {
	Senders   int // concurrent SDK-like senders, one instance id and keep-alive connection each
	Batches   int // batches per sender
	BatchSize int // deltas per batch
	// CopyAll also times one COPY of all rows on one connection.
	CopyAll bool
	// Profile, when set, is called as the API part starts; the function it returns is
	// called as it ends (a CPU profile of the measured part only).
	Profile func() (stop func())
}

// IngestResult compares committing usage through the API with raw COPY of the same rows.
type IngestResult struct {
	Senders, BatchSize int
	Deltas             int           // deltas committed through the API (verified in usage_deltas)
	Batches            int           // batches acknowledged
	GzipBytes          int64         // compressed request bodies
	EncodeTook         time.Duration // client side, before the measured part: JSON + gzip
	APITook            time.Duration // first send to last acknowledgement
	Latency            Dist          // per POST
	CopyTook           time.Duration // the same rows, Senders connections, one COPY per batch
	CopyAllTook        time.Duration // the same rows, one connection, one COPY (if CopyAll)
}

// APIRate is committed deltas per second through the API.
func (r IngestResult) APIRate() float64 { return float64(r.Deltas) / r.APITook.Seconds() }

// CopyRate is rows per second by COPY with the API's concurrency and batches.
func (r IngestResult) CopyRate() float64 { return float64(r.Deltas) / r.CopyTook.Seconds() }

// CopyAllRate is rows per second by one COPY (0 when not measured).
func (r IngestResult) CopyAllRate() float64 {
	if r.CopyAllTook <= 0 {
		return 0
	}
	return float64(r.Deltas) / r.CopyAllTook.Seconds()
}

func (r IngestResult) String() string {
	s := fmt.Sprintf("ingest senders=%d batch=%d deltas=%d: API %.0f deltas/s (%d batches in %s, POST %s, %.1f MB gzip, client encode %s untimed) | COPY (same batches, %d conns) %.0f rows/s → API/COPY = %.2f",
		r.Senders, r.BatchSize, r.Deltas, r.APIRate(), r.Batches, r.APITook.Round(time.Millisecond), r.Latency,
		float64(r.GzipBytes)/1e6, r.EncodeTook.Round(time.Millisecond), r.Senders, r.CopyRate(), r.APIRate()/r.CopyRate())
	if r.CopyAllTook > 0 {
		s += fmt.Sprintf(" | one COPY %.0f rows/s → API/COPY = %.2f", r.CopyAllRate(), r.APIRate()/r.CopyAllRate())
	}
	return s
}

// Ingest generates opt.Senders × opt.Batches batches of w, encodes them (untimed),
// sends them through POST /v1/sdk/usage (each sender in a closed loop on its own
// connection) and checks every row is committed. Then, in the same run, it COPYs the
// same rows (under other instance ids) into usage_deltas on pool: one COPY per batch
// from opt.Senders connections, and with CopyAll one COPY of everything. The worker
// should not run, so that both paths only write.
func Ingest(ctx context.Context, c *http.Client, t Target, pool *pgxpool.Pool, w *Workload, opt IngestOptions) (IngestResult, error) {
	r := IngestResult{Senders: opt.Senders, BatchSize: w.BatchSize}
	tenantID, envID, err := TargetIDs(ctx, c, t)
	if err != nil {
		return r, err
	}
	run := randHex(4)
	type enc struct {
		body  []byte
		batch wire.UsageBatch
	}
	streams := make([][]enc, opt.Senders)
	t0 := time.Now()
	for s := range streams {
		inst := fmt.Sprintf("ingest-%s-%d", run, s)
		for q := 1; q <= opt.Batches; q++ {
			b := w.Batch(inst, int64(q))
			body := Encode(b)
			r.GzipBytes += int64(len(body))
			streams[s] = append(streams[s], enc{body, b})
		}
	}
	r.EncodeTook = time.Since(t0)

	// Through the API.
	lats := make([][]time.Duration, opt.Senders)
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	stopProfile := func() {}
	if opt.Profile != nil {
		stopProfile = opt.Profile()
	}
	start := time.Now()
	for s := range streams {
		wg.Go(func() {
			for _, e := range streams[s] {
				if failed.Load() != nil {
					return
				}
				t1 := time.Now()
				if err := PostUsage(ctx, c, t, e.body, e.batch.Sequence, len(e.batch.Deltas)); err != nil {
					err = fmt.Errorf("sender %d sequence %d: %w", s, e.batch.Sequence, err)
					failed.CompareAndSwap(nil, &err)
					return
				}
				lats[s] = append(lats[s], time.Since(t1))
			}
		})
	}
	wg.Wait()
	r.APITook = time.Since(start)
	stopProfile()
	if p := failed.Load(); p != nil {
		return r, *p
	}
	var all []time.Duration
	for _, l := range lats {
		all = append(all, l...)
	}
	r.Latency = NewDist(all)
	r.Batches = len(all)
	if err := pool.QueryRow(ctx, `select count(*) from usage_deltas where instance_id like $1`, "ingest-"+run+"-%").Scan(&r.Deltas); err != nil {
		return r, err
	}
	if want := opt.Senders * opt.Batches * w.BatchSize; r.Deltas != want {
		return r, fmt.Errorf("usage_deltas holds %d rows of this run, want %d", r.Deltas, want)
	}

	// The same rows by COPY, values converted before timing.
	var tid, eid pgtype.UUID
	if err := tid.Scan(tenantID); err != nil {
		return r, err
	}
	if err := eid.Scan(envID); err != nil {
		return r, err
	}
	rows := make([][][][]any, opt.Senders)
	for s, st := range streams {
		for _, e := range st {
			rows[s] = append(rows[s], CopyRows(tid, eid, "copy-"+e.batch.InstanceID, e.batch))
		}
	}
	start = time.Now()
	for s := range rows {
		wg.Go(func() {
			for _, br := range rows[s] {
				if failed.Load() != nil {
					return
				}
				if _, err := pool.CopyFrom(ctx, pgx.Identifier{"usage_deltas"}, UsageDeltaColumns, pgx.CopyFromRows(br)); err != nil {
					err = fmt.Errorf("copy: %w", err)
					failed.CompareAndSwap(nil, &err)
					return
				}
			}
		})
	}
	wg.Wait()
	r.CopyTook = time.Since(start)
	if p := failed.Load(); p != nil {
		return r, *p
	}
	if opt.CopyAll {
		var flat [][]any
		for _, st := range streams {
			for _, e := range st {
				flat = append(flat, CopyRows(tid, eid, "copyall-"+e.batch.InstanceID, e.batch)...)
			}
		}
		start = time.Now()
		n, err := pool.CopyFrom(ctx, pgx.Identifier{"usage_deltas"}, UsageDeltaColumns, pgx.CopyFromRows(flat))
		r.CopyAllTook = time.Since(start)
		if err != nil {
			return r, fmt.Errorf("copy all: %w", err)
		}
		if int(n) != len(flat) {
			return r, fmt.Errorf("copy all wrote %d of %d rows", n, len(flat))
		}
	}
	return r, nil
}

// UsageDeltaColumns are the columns the API's COPY writes.
var UsageDeltaColumns = store.UsageDeltaColumns

// CopyRows converts a batch's deltas into COPY rows for UsageDeltaColumns: the rows the
// API writes for them (customer uids are made up, as the baseline resolves nothing).
func CopyRows(tenantID, envID pgtype.UUID, instance string, b wire.UsageBatch) [][]any {
	out := make([][]any, len(b.Deltas))
	for i, d := range b.Deltas {
		uid := pgtype.UUID{Bytes: md5.Sum([]byte(d.Customer)), Valid: true}
		out[i] = []any{tenantID, envID, instance, b.Sequence, d.Customer, uid, d.Entitlement, d.Credit, d.PeriodStart,
			numeric(d.Units), numeric(d.Overhead), numeric(d.Price), d.Calls, numeric(cmp.Or(d.GrantCovered, "0"))}
	}
	return out
}

func numeric(s string) pgtype.Numeric {
	var n pgtype.Numeric
	if err := n.Scan(s); err != nil {
		panic(err)
	}
	return n
}
