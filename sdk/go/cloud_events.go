package limitr

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/wire"
)

// Event forwarding: in cloud mode the engine events worth an alert are sent to the
// control plane (POST /v1/sdk/events), which turns them into alerts.

// Defaults of event forwarding.
const (
	DefaultEventBuffer = 10_000
	// DefaultEventFlushInterval is the longest an event waits to be sent: alerts are
	// meant to be prompt, so it is capped at this even when usage is flushed less often.
	DefaultEventFlushInterval = 100 * time.Millisecond
)

// eventHandlerName is the engine handler that captures forwarded events.
const eventHandlerName = "limitr/cloud-events"

// forwardedTypes are the plain engine events forwarded, plus every policy
// notification. meter-changed, meter-reset and the customer-* events are not: they
// come with nearly every call or change and raise no alert.
var forwardedTypes = []string{
	enforcement.EventMeterLimit, enforcement.EventMeterOverage, enforcement.EventCapLimit,
	enforcement.EventCapThresholdCrossed, enforcement.EventMeterGoverned, enforcement.NotificationEvents,
}

// WithEventForwarding turns forwarding of engine events to the control plane on (the
// default in cloud mode) or off. See Cloud, "Events".
func WithEventForwarding(on bool) CloudOption { return func(c *cloudConfig) { c.noEvents = !on } }

// WithEventBuffer bounds the distinct events held for forwarding, waiting or in flight
// (default 10 000). Past it new events are dropped and counted in
// SyncStats.EventsDropped; repeats of a held event only add to its count.
func WithEventBuffer(n int) CloudOption { return func(c *cloudConfig) { c.eventBuffer = n } }

// WithEventFlushInterval sets how long forwarded events are gathered before a batch is
// sent (default: the flush interval, at most 100 ms). Repeats within it are sent once.
func WithEventFlushInterval(d time.Duration) CloudOption {
	return func(c *cloudConfig) { c.eventInterval = d }
}

// eventKey is what makes two events the same alert: repeats are coalesced into one.
type eventKey struct {
	typ, notification, customer, entitlement, capID string
}

// eventBatch is a cut batch of events: sent until the server answers, then done.
type eventBatch struct {
	body  wire.EventBatch
	count int64 // occurrences: the sum of the events' counts
}

// forwarder holds the events waiting to be sent. The engine's handler only appends
// under mu; the sender goroutine does everything else.
type forwarder struct {
	mu          sync.Mutex
	index       map[eventKey]int // position in order
	order       []wire.Event     // waiting, in order of first occurrence
	firstAt     time.Time        // when the oldest waiting event came
	inflight    int              // events in the batch being sent
	inflightN   int64            // and their occurrences
	max         int
	off         bool // closed, or the server does not take events: capture nothing more
	unsupported bool // the server answered 404/405 to events
	closing     bool // Close is flushing: send without waiting
	sent        int64
	dropped     int64
	batches     int64
	nextSeq     int64 // the sender's; moves on once the server answered a batch

	wake chan struct{} // the first event is waiting, or Close began
	done chan struct{} // pulsed when a batch is finished
}

func newForwarder(max int) *forwarder {
	return &forwarder{index: map[eventKey]int{}, max: max, nextSeq: 1,
		wake: make(chan struct{}, 1), done: make(chan struct{}, 1)}
}

// capture is the engine handler. It runs on the caller's goroutine inside Allow and
// friends, so it never blocks on anything but a short mutex and does no I/O: a repeat
// adds to its pending event, a new event is appended while there is room.
func (f *forwarder) capture(ev enforcement.Event) {
	k := eventKey{typ: ev.Type, notification: ev.Notification, entitlement: ev.Entitlement, capID: ev.CapID}
	if ev.Customer != nil {
		k.customer = ev.Customer.ID
	}
	f.mu.Lock()
	if f.coalesceLocked(k) {
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	// Rendered outside the lock: the payload is the costly part, and only new events need it.
	we := wire.Event{Type: ev.Type, Notification: ev.Notification, Source: ev.Source, Customer: k.customer,
		Caller: ev.Caller, Entitlement: ev.Entitlement, Plan: ev.Plan, CapID: ev.CapID, At: ev.Time.UTC(),
		Count: 1, Payload: ev.JSON(), PeriodStart: timePtr(ev.PeriodStart)}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.coalesceLocked(k) { // another call added it meanwhile
		return
	}
	f.index[k] = len(f.order)
	f.order = append(f.order, we)
	if len(f.order) == 1 {
		f.firstAt = time.Now()
		select {
		case f.wake <- struct{}{}:
		default:
		}
	}
}

// repeat answers the engine before it builds a plain event (enforcement.WithRepeats):
// a repeat of a waiting event, or one there is no room for, is counted here, so a
// storm of denials does not build an event per call only to coalesce it.
func (f *forwarder) repeat(r enforcement.EventRef) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.coalesceLocked(eventKey{typ: r.Type, customer: r.Customer, entitlement: r.Entitlement, capID: r.CapID})
}

// coalesceLocked counts an occurrence of k: true when it was a repeat of a waiting
// event, or dropped (no room, or forwarding is off). Caller holds mu.
func (f *forwarder) coalesceLocked(k eventKey) bool {
	if i, ok := f.index[k]; ok {
		f.order[i].Count++
		return true
	}
	if f.off || len(f.order)+f.inflight >= f.max {
		f.dropped++
		return true
	}
	return false
}

// cut takes up to wire.MaxEvents waiting events into a batch; nil when none wait.
func (f *forwarder) cut(instance string, version int) *eventBatch {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.order) == 0 {
		return nil
	}
	n := min(len(f.order), wire.MaxEvents)
	evs := slices.Clone(f.order[:n])
	// A fresh slice, so the memory of a large backlog is released as it drains.
	f.order = slices.Clone(f.order[n:])
	clear(f.index)
	for i, e := range f.order {
		f.index[eventKey{e.Type, e.Notification, e.Customer, e.Entitlement, e.CapID}] = i
	}
	if len(f.order) > 0 {
		f.firstAt = time.Now()
	}
	b := &eventBatch{body: wire.EventBatch{InstanceID: instance, Sequence: f.nextSeq, SentAt: time.Now().UTC(),
		PolicyVersion: version, Events: evs}}
	for _, e := range evs {
		b.count += e.Count
	}
	f.inflight, f.inflightN = n, b.count
	return b
}

// finish ends the batch in flight: acknowledged (sent) or not (dropped).
func (f *forwarder) finish(b *eventBatch, sent bool) {
	f.mu.Lock()
	f.inflight, f.inflightN = 0, 0
	f.nextSeq = b.body.Sequence + 1
	if sent {
		f.sent += b.count
		f.batches++
	} else {
		f.dropped += b.count
	}
	f.mu.Unlock()
	select {
	case f.done <- struct{}{}:
	default:
	}
}

// stop turns capture off for good and drops what waits; it returns how many
// occurrences were dropped.
func (f *forwarder) stop() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.off = true
	var n int64
	for _, e := range f.order {
		n += e.Count
	}
	f.dropped += n
	f.order, f.index = nil, map[eventKey]int{}
	return n
}

func (f *forwarder) stats(s *SyncStats) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s.EventsPending = len(f.order) + f.inflight
	s.EventsSent, s.EventsDropped, s.EventBatches = f.sent, f.dropped, f.batches
	s.EventsUnsupported = f.unsupported
}

// startEvents registers the capture handler and starts the sender (cloud mode, unless
// forwarding is off).
func (c *cloud) startEvents() {
	if c.cfg.noEvents {
		return
	}
	c.events = newForwarder(c.cfg.eventBuffer)
	c.eng.AddHandlerFor(eventHandlerName, forwardedTypes, c.events.capture, enforcement.WithRepeats(c.events.repeat))
	c.sendWG.Add(1)
	go c.eventSender()
}

// eventSender gathers events for the flush interval after the first one comes, then
// sends them in batches, one at a time and in order, each until the server answers.
func (c *cloud) eventSender() {
	defer c.sendWG.Done()
	ctx, f := c.sendCtx, c.events
	var warnedDrops int64
	for {
		f.mu.Lock()
		waiting, closing, due := len(f.order) > 0, f.closing, f.firstAt.Add(c.cfg.eventInterval)
		f.mu.Unlock()
		if !waiting {
			select {
			case <-ctx.Done():
				return
			case <-f.wake:
				continue
			}
		}
		if d := time.Until(due); d > 0 && !closing {
			t := time.NewTimer(d)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-f.wake: // Close began
				t.Stop()
				continue
			case <-t.C:
			}
		}
		b := f.cut(c.instance, int(c.version.Load()))
		if b == nil {
			continue
		}
		if !c.sendEvents(ctx, b) {
			return // Close counts the batch as dropped
		}
		var s SyncStats
		f.stats(&s)
		if s.EventsDropped > warnedDrops && !s.EventsUnsupported {
			c.log.Warn("limitr: events were dropped: the event buffer was full", "dropped", s.EventsDropped-warnedDrops,
				"buffer", c.cfg.eventBuffer)
			warnedDrops = s.EventsDropped
		}
	}
}

// sendEvents delivers a batch; false if ctx ended first. Failures are retried with the
// same sequence (the server deduplicates); a refusal drops the batch.
func (c *cloud) sendEvents(ctx context.Context, b *eventBatch) bool {
	f := c.events
	body, err := gzipJSON(b.body)
	if err != nil {
		c.log.Error("limitr: encoding an event batch failed; dropping it", "err", err)
		f.finish(b, false)
		return true
	}
	bo := c.newBackoff()
	for {
		var ack wire.EventAck
		err := c.postBatch(ctx, wire.PathEvents, body, &ack)
		if err == nil {
			f.finish(b, true)
			return true
		}
		var ae *APIError
		if errors.As(err, &ae) {
			switch {
			case ae.Status == http.StatusNotFound || ae.Status == http.StatusMethodNotAllowed:
				// An older control plane: it will not take events later either.
				f.finish(b, false)
				c.eng.RemoveHandler(eventHandlerName)
				f.mu.Lock()
				f.unsupported = true
				f.mu.Unlock()
				n := f.stop()
				c.log.Warn("limitr: the control plane does not take SDK events; event forwarding is off",
					"status", ae.Status, "dropped", b.count+n)
				return true
			case eventRefused(ae.Status):
				c.log.Error("limitr: the server refused an event batch; dropping it", "instance", b.body.InstanceID,
					"sequence", b.body.Sequence, "events", len(b.body.Events), "err", err)
				f.finish(b, false)
				return true
			}
		}
		if ctx.Err() != nil {
			return false
		}
		c.log.Debug("limitr: sending events failed; retrying", "sequence", b.body.Sequence, "err", err)
		d := bo.next()
		if ae != nil && ae.retryAfter > d {
			d = min(ae.retryAfter, c.cfg.backoffCap)
		}
		if !sleep(ctx, d) {
			return false
		}
	}
}

// eventRefused says whether an answer refuses the batch for good. Events are alerts,
// best sent now or not at all, so unlike usage only timing (408, 429) is retried
// among the 4xx.
func eventRefused(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}

// flushEvents makes the sender send what waits without gathering more (Close).
func (c *cloud) flushEvents() {
	f := c.events
	if f == nil {
		return
	}
	f.mu.Lock()
	f.closing = true
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// waitEvents waits until the events are sent, or ctx ends. It does not fail Close:
// what is left is counted in SyncStats.EventsDropped and logged (abandonEvents).
func (c *cloud) waitEvents(ctx context.Context) {
	f := c.events
	if f == nil {
		return
	}
	for {
		f.mu.Lock()
		left := len(f.order) + f.inflight
		f.mu.Unlock()
		if left == 0 {
			return
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return
		}
	}
}

// abandonEvents counts what Close could not send, once the sender has stopped.
func (c *cloud) abandonEvents() {
	f := c.events
	if f == nil {
		return
	}
	c.eng.RemoveHandler(eventHandlerName)
	f.mu.Lock()
	// The sender stopped mid-batch: its events are counted here, not by finish.
	n := f.inflightN
	f.dropped += n
	f.inflight, f.inflightN = 0, 0
	f.mu.Unlock()
	if n += f.stop(); n > 0 {
		c.log.Warn("limitr: events not sent before Close were dropped", "events", n)
	}
}
