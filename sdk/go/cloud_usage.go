package limitr

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
)

// batch is a cut batch of usage awaiting the server: in memory, or in a spill file.
type batch struct {
	engID   uint64                   // the engine's batch id, to acknowledge (0: none)
	deltas  []enforcement.UsageDelta // what to acknowledge to the engine
	owners  []string                 // customers with grant draws in the batch, for the refresh
	body    wire.UsageBatch          // identity is set when it is first sent
	n       int                      // number of records: deltas, grant draws and call records
	file    string                   // spill file; "" in memory
	sending bool                     // the sender holds it: never dropped
}

func (c *cloud) syncStats() SyncStats {
	c.umu.Lock()
	s := c.stats
	s.Queued, s.Spilled = c.queuedMem, c.spilledN
	c.umu.Unlock()
	s.Pending = c.pending()
	s.AuditPending, s.AuditDropped = c.eng.PendingCallEvents(), c.eng.CallEventsDropped()
	if c.events != nil {
		c.events.stats(&s)
	}
	c.leases.stats(&s)
	s.PolicyVersion = int(c.version.Load())
	s.PolicyUpdatedAt = time.Unix(0, c.policyAt.Load())
	s.StreamConnected = c.streamUp.Load()
	return s
}

func (c *cloud) kick() {
	select {
	case c.wakeSend <- struct{}{}:
	default:
	}
}

func (c *cloud) pulse() {
	select {
	case c.progress <- struct{}{}:
	default:
	}
}

// cutter cuts batches every flush interval, or early once enough meters have usage.
func (c *cloud) cutter() {
	defer c.bgWG.Done()
	ctx := c.bgCtx
	every := min(max(c.cfg.flushInterval/10, time.Millisecond), 50*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(last) >= c.cfg.flushInterval || c.pending() >= c.cfg.flushSize {
			c.cut(false)
			last = time.Now()
		}
	}
}

// cut drains the engine's pending usage into batches. Only the cutter (and Close, after
// the cutter stopped) calls it. final ignores the buffer bound.
func (c *cloud) cut(final bool) {
	for {
		max := wire.MaxDeltas
		if !final {
			c.umu.Lock()
			switch c.cfg.overflow.kind {
			case overflowBlock:
				room := c.cfg.bufferSize - c.queuedMem
				if room <= 0 {
					c.umu.Unlock()
					return // Block: usage waits in the engine's per-meter sums
				}
				max = min(max, room)
			case overflowDrop:
				max = min(max, c.cfg.bufferSize)
			}
			c.umu.Unlock()
		}
		id, ds, gd := c.eng.DrainUsageAll(context.Background(), max)
		// Call records fill what room the sums leave, so a batch stays within the
		// buffer; those that do not fit wait in the engine, within its audit bound.
		var evs []enforcement.CallEvent
		if room := max - len(ds) - len(gd); room > 0 {
			evs = c.eng.DrainCallEvents(room)
		}
		if len(ds) == 0 && len(evs) == 0 && len(gd) == 0 {
			return
		}
		c.enqueue(id, ds, gd, evs, final)
		if len(ds) < max && len(gd) < max && len(ds)+len(gd)+len(evs) < max {
			return
		}
	}
}

func toWire(ds []enforcement.UsageDelta) []wire.UsageDelta {
	out := make([]wire.UsageDelta, len(ds))
	for i, d := range ds {
		out[i] = wire.UsageDelta{Customer: d.Customer, Entitlement: d.Entitlement, Credit: d.Credit,
			PeriodStart: d.PeriodStart, Units: d.Units.String(), Overhead: d.Overhead.String(),
			Price: d.Price.String(), GrantCovered: decimalOpt(d.GrantCovered), Calls: d.Calls,
			CustomerCreatedAt: timePtr(d.CustomerCreatedAt)}
	}
	return out
}

// decimalOpt is d for an optional wire decimal: "" (left out) when zero, so a delta
// without grant-paid overage looks as it did to servers that predate the field.
func decimalOpt(d num.Dec) string {
	if d.IsZero() {
		return ""
	}
	return d.String()
}

// timePtr is t for an optional wire field: nil when zero.
func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// toWireDraws splits the engine's drained draws into grant draws, voucher debits and
// cap uses.
func toWireDraws(gd []enforcement.GrantDraw) ([]wire.GrantDraw, []wire.VoucherDebit, []wire.CapUse) {
	var draws []wire.GrantDraw
	var debits []wire.VoucherDebit
	var uses []wire.CapUse
	for _, d := range gd {
		if d.Cap {
			uses = append(uses, toWireCapUse(d))
			continue
		}
		if d.Voucher {
			debits = append(debits, wire.VoucherDebit{Customer: d.Customer, VoucherID: d.GrantID, Runes: d.Units.String(),
				CustomerCreatedAt: timePtr(d.CustomerCreatedAt)})
			continue
		}
		draws = append(draws, wire.GrantDraw{Customer: d.Customer, GrantID: d.GrantID, PeriodStart: d.PeriodStart, Units: d.Units.String(),
			CustomerCreatedAt: timePtr(d.CustomerCreatedAt)})
	}
	return draws, debits, uses
}

func toWireEvents(evs []enforcement.CallEvent) []wire.UsageEvent {
	if len(evs) == 0 {
		return nil
	}
	out := make([]wire.UsageEvent, len(evs))
	for i, e := range evs {
		out[i] = wire.UsageEvent{ID: e.ID, Customer: e.Customer, Caller: e.Caller, Entitlement: e.Entitlement,
			Units: e.Units.String(), Overhead: e.Overhead.String(), Allowed: e.Allowed, At: e.At}
	}
	return out
}

func (c *cloud) enqueue(id uint64, ds []enforcement.UsageDelta, gd []enforcement.GrantDraw, evs []enforcement.CallEvent, final bool) {
	draws, debits, uses := toWireDraws(gd)
	b := &batch{engID: id, deltas: ds, n: len(ds) + len(gd) + len(evs),
		body: wire.UsageBatch{PolicyVersion: int(c.version.Load()), Deltas: toWire(ds), GrantDraws: draws, VoucherDebits: debits, Events: toWireEvents(evs),
			CapUses: uses, Leased: c.leases.holding()}}
	for _, d := range gd {
		if len(b.owners) == 0 || b.owners[len(b.owners)-1] != d.Customer {
			b.owners = append(b.owners, d.Customer)
		}
	}
	c.umu.Lock()
	if !final {
		switch c.cfg.overflow.kind {
		case overflowSpill:
			if c.spilledN > 0 || c.queuedMem+b.n > c.cfg.bufferSize {
				// Once anything is on disk, later batches follow it there, keeping order.
				if err := c.spillLocked(b); err != nil {
					c.stats.LastError = err
					c.log.Error("limitr: spilling usage failed; keeping it in memory", "err", err)
				}
			}
		case overflowDrop:
			for c.queuedMem+b.n > c.cfg.bufferSize {
				i := slices.IndexFunc(c.queue, func(q *batch) bool { return !q.sending && q.file == "" })
				if i < 0 {
					break
				}
				old := c.queue[i]
				c.queue = slices.Delete(c.queue, i, i+1)
				c.queuedMem -= old.n
				c.stats.Dropped += int64(old.n)
				c.eng.AckUsage(old.engID, old.deltas)
				c.log.Warn("limitr: usage buffer full; dropped the oldest batch", "records", old.n)
			}
		}
	}
	c.queue = append(c.queue, b)
	if b.file == "" {
		c.queuedMem += b.n
	}
	c.umu.Unlock()
	c.kick()
}

// sender sends queued batches one at a time, in order, each until the server answers.
func (c *cloud) sender() {
	defer c.sendWG.Done()
	ctx := c.sendCtx
	for {
		c.refreshRequested()
		c.umu.Lock()
		var b *batch
		if len(c.queue) > 0 {
			b = c.queue[0]
			b.sending = true
		}
		c.umu.Unlock()
		if b == nil {
			select {
			case <-ctx.Done():
				return
			case <-c.wakeSend:
				continue
			}
		}
		if !c.send(ctx, b) {
			c.umu.Lock()
			b.sending = false
			c.umu.Unlock()
			return
		}
	}
}

// send delivers the head batch; false if ctx ended first (the batch stays queued).
func (c *cloud) send(ctx context.Context, b *batch) bool {
	if b.file != "" {
		if err := c.loadSpill(b); err != nil {
			c.log.Error("limitr: unreadable spill file; setting it aside", "file", b.file+".bad", "err", err)
			_ = os.Rename(b.file, b.file+".bad")
			c.umu.Lock()
			c.stats.LastError = err
			c.stats.Dropped += int64(b.n)
			c.stats.Rejected += int64(b.n)
			c.umu.Unlock()
			c.finish(b, nil)
			return true
		}
	}
	if b.body.InstanceID == "" {
		c.umu.Lock()
		b.body.InstanceID, b.body.Sequence, b.body.SentAt = c.instance, c.nextSeq, time.Now().UTC()
		c.umu.Unlock()
		if b.file != "" {
			// Persist the identity before the first attempt: after a crash the file is
			// resent under it, and the server deduplicates.
			if err := writeFileSync(b.file, b.body); err != nil {
				c.log.Error("limitr: rewriting a spill file failed", "file", b.file, "err", err)
			}
		}
	}
	body, err := gzipJSON(b.body)
	if err != nil {
		c.log.Error("limitr: encoding a usage batch failed; dropping it", "err", err)
		c.reject(b, err)
		return true
	}
	bo := c.newBackoff()
	for {
		ack, err := c.post(ctx, body)
		if err == nil {
			if ack.Sequence != 0 && ack.Sequence != b.body.Sequence {
				c.log.Warn("limitr: the server acknowledged another sequence", "sent", b.body.Sequence, "acked", ack.Sequence)
			}
			c.finish(b, ack)
			return true
		}
		var ae *APIError
		if errors.As(err, &ae) && permanent(ae.Status) {
			c.log.Error("limitr: the server refused a usage batch; dropping it", "instance", b.body.InstanceID,
				"sequence", b.body.Sequence, "records", b.n, "err", err)
			c.reject(b, err)
			return true
		}
		c.umu.Lock()
		c.stats.LastError = err
		c.umu.Unlock()
		if ctx.Err() != nil {
			return false
		}
		c.log.Debug("limitr: sending usage failed; retrying", "sequence", b.body.Sequence, "err", err)
		d := bo.next()
		if ae != nil && ae.retryAfter > d {
			d = min(ae.retryAfter, c.cfg.backoffCap)
		}
		if !sleep(ctx, d) {
			return false
		}
	}
}

// permanent says whether a refusal means the batch itself is invalid. 401 and 403 are
// about the key, 408, 409 and 429 about timing: those are retried.
func permanent(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestTimeout, http.StatusConflict, http.StatusTooManyRequests:
		return false
	}
	return status >= 400 && status < 500
}

func (c *cloud) post(ctx context.Context, body []byte) (*wire.UsageAck, error) {
	var ack wire.UsageAck
	if err := c.postBatch(ctx, wire.PathUsage, body, &ack); err != nil {
		return nil, err
	}
	return &ack, nil
}

// postBatch POSTs a gzipped batch to path and decodes the 200 answer into ack. Any
// other answer is an *APIError (with the Retry-After it asked for).
func (c *cloud) postBatch(ctx context.Context, path string, body []byte, ack any) error {
	rctx, cancel := context.WithTimeout(ctx, c.cfg.requestLimit)
	defer cancel()
	resp, err := c.request(rctx, http.MethodPost, path, body, http.Header{"Content-Encoding": {"gzip"}})
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		ae := readProblem(resp)
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
			ae.retryAfter = time.Duration(s) * time.Second
		}
		return ae
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(ack); err != nil {
		// The batch may be committed; resending it under the same identity is safe.
		return fmt.Errorf("limitr: unreadable acknowledgement of %s: %w", path, err)
	}
	return nil
}

func gzipJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := json.NewEncoder(zw).Encode(v); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// finish removes the acknowledged (or abandoned) head batch.
func (c *cloud) finish(b *batch, ack *wire.UsageAck) {
	c.umu.Lock()
	if i := slices.Index(c.queue, b); i >= 0 {
		c.queue = slices.Delete(c.queue, i, i+1)
	}
	if b.file == "" {
		c.queuedMem -= b.n
	} else {
		c.spilledN -= b.n
		if err := os.Remove(b.file); err != nil && !errors.Is(err, os.ErrNotExist) {
			c.log.Error("limitr: removing a sent spill file failed", "file", b.file, "err", err)
		}
	}
	if b.body.InstanceID == c.instance && b.body.Sequence >= c.nextSeq {
		c.nextSeq = b.body.Sequence + 1
	}
	if ack != nil {
		c.stats.Sent += int64(b.n)
		c.stats.Batches++
		if ack.Duplicate {
			c.stats.Duplicates++
		}
		c.stats.LastFlush = time.Now()
		c.stats.LastError = nil
		c.stats.Unattributed += int64(len(ack.Unattributed))
	}
	refresh := ack != nil && c.cfg.refreshInterval > 0 && c.spilledN == 0 && b.engID != 0
	c.umu.Unlock()
	var owners []string
	if refresh {
		for _, d := range b.deltas {
			if len(owners) == 0 || owners[len(owners)-1] != d.Customer {
				owners = append(owners, d.Customer)
			}
		}
		for _, o := range b.owners {
			if !slices.Contains(owners, o) {
				owners = append(owners, o)
			}
		}
	}
	if b.engID != 0 && b.file == "" {
		c.eng.AckUsage(b.engID, b.deltas)
	}
	if ack != nil && len(ack.Unattributed) > 0 {
		c.warnUnattributed(b, ack.Unattributed)
	}
	b.deltas, b.owners, b.body.Deltas, b.body.GrantDraws, b.body.Events = nil, nil, nil, nil, nil
	c.pulse()
	if refresh {
		c.refreshCustomers(owners)
	}
}

// unattributedWarnEvery is how often, at most, one customer's unattributed usage is
// logged: a customer deleted on the server while this instance serves it would
// otherwise log every flush.
const unattributedWarnEvery = time.Minute

// warnUnattributed logs the records of an acknowledged batch the server committed
// without a customer, once per customer per unattributedWarnEvery. Only the sender
// calls it.
func (c *cloud) warnUnattributed(b *batch, us []wire.Unattributed) {
	type tally struct {
		reason                         string
		deltas, draws, debits, records int
	}
	per := map[string]*tally{}
	var order []string
	for _, u := range us {
		t := per[u.Customer]
		if t == nil {
			t = &tally{reason: u.Reason}
			per[u.Customer] = t
			order = append(order, u.Customer)
		}
		switch u.Kind {
		case wire.RecordDelta:
			t.deltas++
		case wire.RecordGrantDraw:
			t.draws++
		case wire.RecordVoucherDebit:
			t.debits++
		default:
			t.records++
		}
	}
	now := time.Now()
	if len(c.warned) > 10_000 {
		for k, at := range c.warned {
			if now.Sub(at) >= unattributedWarnEvery {
				delete(c.warned, k)
			}
		}
	}
	for _, id := range order {
		if at, ok := c.warned[id]; ok && now.Sub(at) < unattributedWarnEvery {
			continue
		}
		c.warned[id] = now
		t := per[id]
		c.log.Warn("limitr: the server could not attribute usage to a customer; it kept the usage for an operator",
			"customer", id, "reason", t.reason, "deltas", t.deltas, "grant_draws", t.draws, "voucher_debits", t.debits, "call_records", t.records,
			"instance", b.body.InstanceID, "sequence", b.body.Sequence)
	}
}

func (c *cloud) reject(b *batch, err error) {
	c.umu.Lock()
	c.stats.Dropped += int64(b.n)
	c.stats.Rejected += int64(b.n)
	c.stats.LastError = err
	c.umu.Unlock()
	c.finish(b, nil)
}

// ---- spill files ----

const spillExt = ".batch"

// spillLocked moves an in-memory batch to a file. Its usage leaves the engine's
// in-flight accounting (memory stays bounded); the local meters keep it. Caller holds umu.
func (c *cloud) spillLocked(b *batch) error {
	c.spillSeq++
	name := filepath.Join(c.cfg.overflow.dir, fmt.Sprintf("%020d-%08d%s", time.Now().UnixNano(), c.spillSeq, spillExt))
	if err := writeFileSync(name, b.body); err != nil {
		return err
	}
	wasQueued := slices.Contains(c.queue, b)
	if wasQueued {
		c.queuedMem -= b.n
	}
	b.file = name
	c.spilledN += b.n
	if b.engID != 0 {
		c.eng.AckUsage(b.engID, b.deltas)
	}
	// The file holds the records now; memory must not grow with what is spilled.
	b.engID, b.deltas, b.owners, b.body.Deltas, b.body.GrantDraws, b.body.Events = 0, nil, nil, nil, nil, nil
	return nil
}

// writeFileSync writes v as JSON to path atomically and durably: a temporary file,
// fsynced, renamed over path, and the directory fsynced.
func writeFileSync(path string, v any) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".spill-*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = json.NewEncoder(f).Encode(v)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// loadSpilled queues the spill files a previous run left, oldest first.
func (c *cloud) loadSpilled() error {
	dir := c.cfg.overflow.dir
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("limitr: cloud: spill directory: %w", err)
	}
	var names []string
	for _, e := range ents {
		switch n := e.Name(); {
		case strings.HasPrefix(n, ".spill-") && strings.HasSuffix(n, ".tmp"):
			os.Remove(filepath.Join(dir, n)) // a write that never completed
		case strings.HasSuffix(n, spillExt) && !e.IsDir():
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		path := filepath.Join(dir, n)
		var body wire.UsageBatch
		if err := readJSONFile(path, &body); err != nil {
			c.log.Error("limitr: unreadable spill file; leaving it aside", "file", path, "err", err)
			_ = os.Rename(path, path+".bad")
			continue
		}
		n := len(body.Deltas) + len(body.GrantDraws) + len(body.Events)
		c.queue = append(c.queue, &batch{file: path, n: n})
		c.spilledN += n
	}
	if len(names) > 0 {
		c.log.Info("limitr: sending usage spilled by an earlier run", "files", len(names), "records", c.spilledN)
	}
	return nil
}

func (c *cloud) loadSpill(b *batch) error {
	var body wire.UsageBatch
	if err := readJSONFile(b.file, &body); err != nil {
		return err
	}
	b.body = body
	return nil
}

func readJSONFile(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, v)
}
