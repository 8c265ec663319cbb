package limitr_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// fakeEvents is the fake control plane's side of POST /v1/sdk/events.
type fakeEvents struct {
	status         int           // non-zero: every POST answers this status
	reject         int           // the next n POSTs answer 422
	down           bool          // 503 while set
	delay          time.Duration // each POST waits this long before answering
	commitThenDrop int           // the next n POSTs commit, then the connection is cut
	posts          int
	seqs           []int64 // sequence of every well-formed POST, in arrival order
	instances      []string
	committed      map[string]bool
	duplicates     int
	got            []wire.Event // events of committed batches
	gotAt          []time.Time  // when each of got arrived
}

func (f *fakeCP) postEvents(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	ev := &f.events
	ev.posts++
	status, delay := ev.status, ev.delay
	switch {
	case status != 0:
	case ev.down:
		status = http.StatusServiceUnavailable
	case ev.reject > 0:
		ev.reject--
		status = http.StatusUnprocessableEntity
	}
	f.mu.Unlock()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-r.Context().Done():
			return
		case <-f.shutdown:
			return
		}
	}
	if status != 0 {
		problemReply(w, status, "events refused")
		return
	}
	if r.Header.Get("Content-Encoding") != "gzip" {
		problemReply(w, http.StatusBadRequest, "batches are gzipped")
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	var b wire.EventBatch
	if err := json.NewDecoder(zr).Decode(&b); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	if b.InstanceID == "" || b.Sequence <= 0 || len(b.Events) == 0 || len(b.Events) > wire.MaxEvents {
		problemReply(w, http.StatusUnprocessableEntity, "bad batch identity or size")
		return
	}
	for _, e := range b.Events {
		if e.Count < 1 || e.Type == "" || e.At.IsZero() {
			problemReply(w, http.StatusUnprocessableEntity, fmt.Sprintf("bad event %+v", e))
			return
		}
	}
	f.mu.Lock()
	ev.seqs = append(ev.seqs, b.Sequence)
	ev.instances = append(ev.instances, b.InstanceID)
	if ev.committed == nil {
		ev.committed = map[string]bool{}
	}
	key := b.InstanceID + "/" + strconv.FormatInt(b.Sequence, 10)
	ack := wire.EventAck{Sequence: b.Sequence}
	if ev.committed[key] {
		ev.duplicates++
		ack.Duplicate = true
	} else {
		ev.committed[key] = true
		ev.got = append(ev.got, b.Events...)
		for range b.Events {
			ev.gotAt = append(ev.gotAt, time.Now())
		}
		ack.Accepted = len(b.Events)
	}
	drop := !ack.Duplicate && ev.commitThenDrop > 0
	if drop {
		ev.commitThenDrop--
	}
	f.mu.Unlock()
	if drop {
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	reply(w, http.StatusOK, ack)
}

// eventsGot is a copy of the events the fake committed.
func (f *fakeCP) eventsGot() []wire.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events.got)
}

func (f *fakeCP) eventPosts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events.posts
}

// eventsPolicy has a hard limit of 10 on api and a notification near it.
const eventsPolicy = `{"policy": {
  "credits": {"req": {}},
  "plans": {"free": {"default": true, "entitlements": {"api": {"limit": {"credit": "req", "value": 10}}}}},
  "notifications": {"near-limit": {"matches": "type == 'meter-changed' && event.remaining < 3"}}
}}`

func newCustomer(t *testing.T, p *limitr.Policy, id string) {
	t.Helper()
	if _, err := p.CreateCustomer(context.Background(), id, ""); err != nil {
		t.Fatal(err)
	}
}

// A denial at a hard limit reaches the server as one meter-limit event, promptly.
func TestCloudEventsMeterLimit(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	// A flush interval of 1 s: events still go within the 100 ms default.
	p := connect(t, f, limitr.WithFlushInterval(time.Second))
	newCustomer(t, p, "u")
	for range 10 {
		mustAllow(t, p, "u", 1, true)
	}
	denied := time.Now()
	mustAllow(t, p, "u", 1, false)
	eventually(t, "the meter-limit event", func() bool { return len(f.eventsGot()) > 0 })
	f.mu.Lock()
	at := f.events.gotAt[0]
	f.mu.Unlock()
	if d := at.Sub(denied); d > 300*time.Millisecond {
		t.Errorf("the event took %v to arrive", d)
	}
	time.Sleep(150 * time.Millisecond)
	got := f.eventsGot()
	if len(got) != 1 {
		t.Fatalf("server got %d events, want one (allowed calls forward nothing): %+v", len(got), got)
	}
	e := got[0]
	if e.Type != limitr.EventMeterLimit || e.Notification != "" || e.Source != "" || e.Customer != "u" ||
		e.Caller != "u" || e.Entitlement != "api" || e.Plan != "free" || e.Count != 1 {
		t.Fatalf("event %+v", e)
	}
	if d := e.At.Sub(denied); d < 0 || d > time.Second {
		t.Errorf("At = %v, denied at %v", e.At, denied)
	}
	// The meter's period (the server keys the alert on it): this meter started with the test.
	if e.PeriodStart == nil || e.PeriodStart.After(denied) || denied.Sub(*e.PeriodStart) > time.Minute {
		t.Errorf("PeriodStart %v, denied at %v", e.PeriodStart, denied)
	}
	var payload map[string]any
	if err := json.Unmarshal(e.Payload, &payload); err != nil || payload["meter"] == nil || payload["entitlement"] != "api" {
		t.Fatalf("payload %s: %v", e.Payload, err)
	}
	if s := p.SyncStats(); s.EventsSent != 1 || s.EventBatches != 1 || s.EventsPending != 0 || s.EventsDropped != 0 {
		t.Fatalf("stats %+v", s)
	}
	closeNow(t, p)
	// One identity per instance: the event batches carry the usage batches' instance id.
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.events.seqs) != 1 || f.events.seqs[0] != 1 {
		t.Fatalf("event sequences %v", f.events.seqs)
	}
	for _, b := range f.committed {
		if b.InstanceID != f.events.instances[0] {
			t.Fatalf("usage instance %q, event instance %q", b.InstanceID, f.events.instances[0])
		}
	}
}

// Repeats while an event waits are sent once, with their count.
func TestCloudEventsCoalesce(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f, limitr.WithEventFlushInterval(500*time.Millisecond))
	newCustomer(t, p, "u")
	mustAllow(t, p, "u", 10, true)
	start := time.Now()
	for range 1000 {
		mustAllow(t, p, "u", 1, false)
	}
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Logf("1000 denials took %v: they may straddle a batch", d)
	}
	eventually(t, "the events sent", func() bool { return p.SyncStats().EventsSent == 1000 })
	got := f.eventsGot()
	if len(got) != 1 || got[0].Type != limitr.EventMeterLimit || got[0].Count != 1000 {
		t.Fatalf("server got %+v, want one meter-limit with count 1000", got)
	}
	if s := p.SyncStats(); s.EventBatches != 1 || s.EventsDropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// A policy notification arrives under its name, with the event it matched as Source.
func TestCloudEventsNotification(t *testing.T) {
	f := newFakeCP(t, eventsPolicy)
	p := connect(t, f)
	newCustomer(t, p, "u")
	for range 7 {
		mustAllow(t, p, "u", 1, true) // remaining 3: not < 3
	}
	time.Sleep(100 * time.Millisecond)
	if got := f.eventsGot(); len(got) != 0 {
		t.Fatalf("events before the notification matched: %+v", got)
	}
	mustAllow(t, p, "u", 1, true) // remaining 2
	eventually(t, "the notification", func() bool { return len(f.eventsGot()) > 0 })
	got := f.eventsGot()
	e := got[0]
	if len(got) != 1 || e.Type != "near-limit" || e.Notification != "near-limit" || e.Source != limitr.EventMeterChanged ||
		e.Customer != "u" || e.Entitlement != "api" || e.Count != 1 {
		t.Fatalf("server got %+v", got)
	}
	var payload map[string]any
	if err := json.Unmarshal(e.Payload, &payload); err != nil || payload["remaining"] != 2.0 {
		t.Fatalf("payload %s: %v", e.Payload, err)
	}
}

// A reply lost after the server committed is retried under the same sequence; the
// server takes it once.
func TestCloudEventsLostReply(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.set(func() { f.events.commitThenDrop = 1 })
	p := connect(t, f)
	newCustomer(t, p, "u")
	mustAllow(t, p, "u", 11, false)
	eventually(t, "the acknowledgement", func() bool { return p.SyncStats().EventBatches == 1 })
	mustAllow(t, p, "u", 11, false)
	eventually(t, "the second batch", func() bool { return p.SyncStats().EventBatches == 2 })
	f.mu.Lock()
	seqs, dups := slices.Clone(f.events.seqs), f.events.duplicates
	f.mu.Unlock()
	if !slices.Equal(seqs, []int64{1, 1, 2}) || dups != 1 {
		t.Fatalf("server saw sequences %v (%d duplicates), want [1 1 2] (1)", seqs, dups)
	}
	if got := f.eventsGot(); len(got) != 2 {
		t.Fatalf("server committed %d events, want 2", len(got))
	}
	if s := p.SyncStats(); s.EventsSent != 2 || s.EventsDropped != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// A batch the server refuses is dropped and counted; the next goes on.
func TestCloudEventsRefused(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.set(func() { f.events.reject = 1 })
	p := connect(t, f)
	newCustomer(t, p, "u")
	mustAllow(t, p, "u", 11, false)
	eventually(t, "the refusal", func() bool { return p.SyncStats().EventsDropped == 1 })
	mustAllow(t, p, "u", 11, false)
	eventually(t, "the next batch", func() bool { return p.SyncStats().EventsSent == 1 })
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.events.posts != 2 || !slices.Equal(f.events.seqs, []int64{2}) {
		t.Fatalf("posts %d, sequences %v", f.events.posts, f.events.seqs)
	}
}

// While the server is down, at most WithEventBuffer distinct events are held; the
// rest are counted as dropped, and the held ones are sent once it is back.
func TestCloudEventsBufferBound(t *testing.T) {
	const buffer, customers = 5, 30
	f := newFakeCP(t, cloudPolicy("10"))
	f.set(func() { f.events.down = true })
	p := connect(t, f, limitr.WithEventBuffer(buffer), limitr.WithEventFlushInterval(5*time.Millisecond))
	for i := range customers {
		newCustomer(t, p, "c"+strconv.Itoa(i))
	}
	calls := int64(0)
	for round := range 200 {
		for i := range customers {
			mustAllow(t, p, "c"+strconv.Itoa(i), 11, false)
			calls++
		}
		if s := p.SyncStats(); s.EventsPending > buffer {
			t.Fatalf("round %d: %d events held, bound %d", round, s.EventsPending, buffer)
		}
	}
	s := p.SyncStats()
	if s.EventsDropped < calls-buffer*200 || s.EventsSent != 0 {
		t.Fatalf("stats %+v after %d denials", s, calls)
	}
	eventually(t, "a batch tried", func() bool { return f.eventPosts() > 0 })
	f.set(func() { f.events.down = false })
	eventually(t, "the held events sent", func() bool { s := p.SyncStats(); return s.EventsPending == 0 && s.EventsSent > 0 })
	s = p.SyncStats()
	if s.EventsSent+s.EventsDropped != calls {
		t.Fatalf("sent %d + dropped %d != %d denials", s.EventsSent, s.EventsDropped, calls)
	}
	if got := f.eventsGot(); len(got) > buffer {
		t.Fatalf("server got %d events from a buffer of %d", len(got), buffer)
	}
}

// A control plane that does not know the endpoint turns forwarding off, once.
func TestCloudEventsUnsupported(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.set(func() { f.events.status = http.StatusNotFound })
	p := connect(t, f)
	newCustomer(t, p, "u")
	newCustomer(t, p, "v")
	mustAllow(t, p, "u", 11, false)
	eventually(t, "forwarding off", func() bool { return p.SyncStats().EventsUnsupported })
	for range 10 {
		mustAllow(t, p, "v", 1, true)
	}
	for range 100 {
		mustAllow(t, p, "v", 1, false)
	}
	time.Sleep(200 * time.Millisecond)
	if n := f.eventPosts(); n != 1 {
		t.Fatalf("%d event posts after a 404, want 1", n)
	}
	if s := p.SyncStats(); s.EventsDropped != 1 || s.EventsPending != 0 || s.LastError != nil {
		t.Fatalf("stats %+v", s)
	}
	closeNow(t, p)
	if got := f.units("v", "api"); got != 10 {
		t.Fatalf("usage %v, want 10: usage sync must not suffer", got)
	}
}

// WithEventForwarding(false) sends nothing.
func TestCloudEventsOff(t *testing.T) {
	f := newFakeCP(t, eventsPolicy)
	p := connect(t, f, limitr.WithEventForwarding(false))
	newCustomer(t, p, "u")
	for range 10 {
		mustAllow(t, p, "u", 1, true) // fires the notification thrice
	}
	mustAllow(t, p, "u", 1, false)
	time.Sleep(200 * time.Millisecond)
	closeNow(t, p)
	if n := f.eventPosts(); n != 0 {
		t.Fatalf("%d event posts with forwarding off", n)
	}
	if s := p.SyncStats(); s.EventsSent != 0 || s.EventsDropped != 0 || s.EventBatches != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// Close sends the events still gathering.
func TestCloudEventsCloseFlushes(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	p := connect(t, f, limitr.WithEventFlushInterval(time.Hour))
	newCustomer(t, p, "u")
	mustAllow(t, p, "u", 11, false)
	time.Sleep(50 * time.Millisecond)
	if n := f.eventPosts(); n != 0 {
		t.Fatalf("%d posts before the interval", n)
	}
	closeNow(t, p)
	if got := f.eventsGot(); len(got) != 1 || got[0].Type != limitr.EventMeterLimit {
		t.Fatalf("server got %+v", got)
	}
	if s := p.SyncStats(); s.EventsUnsupported || s.EventsSent != 1 || s.EventsDropped != 0 {
		t.Fatalf("stats after Close %+v: a closed SDK is not one whose server refuses events", s)
	}
}

// A hanging server never slows calls down, and Close gives up on it at its deadline.
func TestCloudEventsNeverBlockAllow(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("10"))
	f.set(func() { f.events.delay = 10 * time.Second })
	p := connect(t, f, limitr.WithEventFlushInterval(time.Millisecond))
	newCustomer(t, p, "u")
	newCustomer(t, p, "v")
	mustAllow(t, p, "u", 10, true)
	start := time.Now()
	for i := range 10_000 {
		mustAllow(t, p, "u", 1, false)
		if i%100 == 0 {
			mustAllow(t, p, "v", 0.001, true)
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("10 000 calls took %v with the event endpoint hanging", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start = time.Now()
	if err := p.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	if s := p.SyncStats(); s.EventsDropped != 10_000 || s.EventsSent != 0 || s.EventsPending != 0 {
		t.Fatalf("stats %+v", s)
	}
}
