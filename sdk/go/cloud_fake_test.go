package limitr_test

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	dec "github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// fakeCP is an in-process control plane speaking the SDK wire protocol, with knobs to
// make it fail.
type fakeCP struct {
	t     testing.TB
	srv   *httptest.Server
	token string
	env   string

	mu       sync.Mutex
	versions []fakeVersion // published versions; the last is active
	feed     []fakeEvent
	nextID   int64
	notify   chan struct{} // closed and replaced when the feed grows
	drop     chan struct{} // closed and replaced to cut every stream
	shutdown chan struct{}

	streamStatus int      // non-zero: the stream answers this status
	oldest       int64    // the oldest event id the feed still holds (retention removed older ones)
	resets       int      // reset events sent
	helloNoHash  bool     // hellos name no policy version (only a reset or push makes the SDK fetch it)
	streamConns  int      // stream connections accepted
	lastEventIDs []string // Last-Event-ID of each stream connection
	policyGets   int
	notModified  int

	usageDown      bool // 503 while set
	failUsage      int  // the next n POSTs answer 503
	commitThenDrop int  // the next n POSTs commit, then the connection is cut
	rejectUsage    int  // the next n POSTs answer 422
	usagePosts     int
	committed      map[string]wire.UsageBatch // instance/sequence
	duplicates     int
	lastSeq        map[string]int64
	seqViolations  []string
	totals         map[fakeMeterKey]*fakeTotal
	draws          map[fakeDrawKey]dec.Dec
	capUse         map[fakeMeterKey]dec.Dec // committed cap uses, keyed by holder, "cap:"+key and period
	unattributed   []wire.Unattributed      // records committed without a customer, as the server keeps them

	leases fakeLeases // allowance leases (cloud_leases_test.go); off (404) unless enabled

	customers  map[string]*fakeRecord
	failCust   int // the next n customer operations answer 500
	stateCalls map[string]int
	stateDelay time.Duration
	stateDown  bool // the state endpoint answers 503 while set
	grantSeq   int

	events fakeEvents // POST /v1/sdk/events (cloud_events_test.go)
}

type fakeDrawKey struct {
	customer, grant string
	period          time.Time
}

type fakeVersion struct {
	doc  string
	hash string
}

type fakeEvent struct {
	id   int64
	typ  string
	data string
}

type fakeMeterKey struct {
	customer, ent string
	period        time.Time
}

type fakeTotal struct {
	credit          string
	units, overhead dec.Dec
	calls           int64
	granted         dec.Dec // grant_covered, summed as the worker does
	grantedSent     int     // deltas that carried grant_covered
}

type fakeRecord struct {
	ID            string                     `json:"id"`
	Plan          string                     `json:"plan"`
	ResolvedPlan  string                     `json:"resolved_plan"`
	Type          string                     `json:"type"`
	Label         string                     `json:"label"`
	Refs          []string                   `json:"refs"`
	AltIDs        []string                   `json:"alt_ids"`
	Metadata      map[string]any             `json:"metadata"`
	Timezone      string                     `json:"timezone"`
	BillingAnchor time.Time                  `json:"billing_anchor"`
	CreatedAt     time.Time                  `json:"created_at"`
	UpdatedAt     time.Time                  `json:"updated_at"`
	Revision      int64                      `json:"revision"`
	Overrides     map[string]json.RawMessage `json:"overrides"`
	Topups        []fakeTopup                `json:"topups"`
	Caps          []wire.CustomerCap         `json:"caps,omitempty"`
}

type fakeTopup struct {
	ID        string    `json:"id"`
	Topup     string    `json:"topup"`
	GrantID   string    `json:"grant_id"`
	Credit    string    `json:"credit"`
	Value     string    `json:"value"`
	Price     string    `json:"price,omitempty"`
	Currency  string    `json:"currency"`
	AppliedAt time.Time `json:"applied_at"`
}

// topupDefs is what the fake knows of the test policies' topups.
var topupDefs = map[string]struct{ credit, value string }{"t20": {"req", "20"}}

func newFakeCP(t testing.TB, doc string) *fakeCP {
	t.Helper()
	f := &fakeCP{t: t, token: "sdk_test_key", env: "production", notify: make(chan struct{}), drop: make(chan struct{}),
		shutdown: make(chan struct{}), committed: map[string]wire.UsageBatch{}, lastSeq: map[string]int64{},
		totals: map[fakeMeterKey]*fakeTotal{}, customers: map[string]*fakeRecord{}, stateCalls: map[string]int{},
		draws: map[fakeDrawKey]dec.Dec{}, capUse: map[fakeMeterKey]dec.Dec{}}
	if doc != "" {
		f.publish(doc)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+wire.PathPolicy, f.auth(f.getPolicy))
	mux.HandleFunc("GET "+wire.PathStream, f.auth(f.stream))
	mux.HandleFunc("POST "+wire.PathUsage, f.auth(f.postUsage))
	mux.HandleFunc("POST "+wire.PathEvents, f.auth(f.postEvents))
	mux.HandleFunc("GET /v1/sdk/customers/{id}/state", f.auth(f.getState))
	mux.HandleFunc("POST "+wire.PathLeases, f.auth(f.postLeases))
	mux.HandleFunc("POST "+wire.PathReturn, f.auth(f.returnLeases))
	base := "/v1/environments/{env}/customers"
	mux.HandleFunc("POST "+base, f.auth(f.createCustomer))
	mux.HandleFunc("GET "+base+"/{id}", f.auth(f.custOp(f.getCustomer)))
	mux.HandleFunc("PATCH "+base+"/{id}", f.auth(f.custOp(f.patchCustomer)))
	mux.HandleFunc("DELETE "+base+"/{id}", f.auth(f.custOp(f.deleteCustomer)))
	mux.HandleFunc("PUT "+base+"/{id}/plan", f.auth(f.custOp(f.setPlan)))
	mux.HandleFunc("PUT "+base+"/{id}/overrides/{ent}", f.auth(f.custOp(f.putOverride)))
	mux.HandleFunc("DELETE "+base+"/{id}/overrides/{ent}", f.auth(f.custOp(f.deleteOverride)))
	mux.HandleFunc("POST "+base+"/{id}/topups", f.auth(f.custOp(f.applyTopup)))
	mux.HandleFunc("PUT "+base+"/{id}/caps/{cap}", f.auth(f.custOp(f.putCap)))
	mux.HandleFunc("POST "+base+"/{id}/caps/{cap}/reset", f.auth(f.custOp(f.resetCap)))
	mux.HandleFunc("DELETE "+base+"/{id}/caps/{cap}", f.auth(f.custOp(f.deleteCap)))
	f.srv = httptest.NewServer(mux)
	t.Cleanup(func() {
		close(f.shutdown)
		f.srv.Close()
	})
	return f
}

func problemReply(w http.ResponseWriter, status int, detail string, fields ...string) {
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	pb := map[string]any{"type": "about:blank", "title": http.StatusText(status), "status": status, "detail": detail}
	var errs []map[string]string
	for i := 0; i+1 < len(fields); i += 2 {
		errs = append(errs, map[string]string{"path": fields[i], "message": fields[i+1]})
	}
	if errs != nil {
		pb["errors"] = errs
	}
	_ = json.NewEncoder(w).Encode(pb)
}

func (f *fakeCP) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+f.token {
			problemReply(w, http.StatusUnauthorized, "bad key")
			return
		}
		h(w, r)
	}
}

// ---- policy ----

func (f *fakeCP) publish(doc string) int {
	p, err := limitr.New([]byte(doc), limitr.WithFormat(limitr.FormatJSON))
	if err != nil {
		f.t.Fatalf("fake: policy: %v", err)
	}
	f.mu.Lock()
	f.versions = append(f.versions, fakeVersion{doc: doc, hash: p.Version()})
	n := len(f.versions)
	data, _ := json.Marshal(wire.PolicyChanged{Version: n, Hash: p.Version()})
	f.appendLocked(wire.EventPolicy, string(data))
	f.mu.Unlock()
	return n
}

func (f *fakeCP) appendLocked(typ, data string) {
	f.nextID++
	f.feed = append(f.feed, fakeEvent{id: f.nextID, typ: typ, data: data})
	close(f.notify)
	f.notify = make(chan struct{})
}

func (f *fakeCP) getPolicy(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.policyGets++
	if len(f.versions) == 0 {
		f.mu.Unlock()
		problemReply(w, http.StatusNotFound, `no policy is published to environment "production" yet`)
		return
	}
	v := f.versions[len(f.versions)-1]
	n := len(f.versions)
	match := r.Header.Get("If-None-Match") == strconv.Quote(v.hash)
	if match {
		f.notModified++
	}
	f.mu.Unlock()
	w.Header().Set("ETag", strconv.Quote(v.hash))
	w.Header().Set(wire.HeaderVer, strconv.Itoa(n))
	w.Header().Set(wire.HeaderEnv, f.env)
	if match {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, v.doc)
}

// ---- stream ----

func (f *fakeCP) stream(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	if f.streamStatus != 0 {
		st := f.streamStatus
		f.mu.Unlock()
		problemReply(w, st, "stream unavailable")
		return
	}
	f.streamConns++
	last := r.Header.Get("Last-Event-ID")
	f.lastEventIDs = append(f.lastEventIDs, last)
	after := f.nextID
	if last != "" {
		after, _ = strconv.ParseInt(last, 10, 64)
	}
	v := f.versions[len(f.versions)-1]
	h := wire.Hello{Environment: f.env, PolicyVersion: len(f.versions), PolicyHash: v.hash, Cursor: f.nextID}
	if f.helloNoHash {
		h.PolicyVersion, h.PolicyHash = 0, ""
	}
	hello, _ := json.Marshal(h)
	// As the server does: the hello carries the resume point, and a resume point
	// older than the feed holds is answered with a reset to the newest id.
	var reset []byte
	cursor := f.nextID
	if last != "" && after < f.oldest-1 {
		reset, _ = json.Marshal(wire.Reset{Cursor: cursor, Reason: "retention"})
		f.resets++
	}
	helloID := after
	drop := f.drop
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	fl := w.(http.Flusher)
	fmt.Fprintf(w, ": welcome\n\nid: %d\nevent: hello\ndata: %s\n\n", helloID, hello)
	if reset != nil {
		fmt.Fprintf(w, "id: %d\nevent: %s\ndata: %s\n\n", cursor, wire.EventReset, reset)
		after = cursor
	}
	fl.Flush()
	for {
		f.mu.Lock()
		var out []fakeEvent
		for _, e := range f.feed {
			if e.id > after {
				out = append(out, e)
			}
		}
		wait := f.notify
		f.mu.Unlock()
		for _, e := range out {
			fmt.Fprintf(w, "id: %d\nevent: %s\n", e.id, e.typ)
			for _, line := range strings.Split(e.data, "\n") {
				fmt.Fprintf(w, "data: %s\n", line)
			}
			fmt.Fprint(w, "\n")
			after = e.id
		}
		fl.Flush()
		select {
		case <-wait:
		case <-drop:
			return
		case <-f.shutdown:
			return
		case <-r.Context().Done():
			return
		case <-time.After(50 * time.Millisecond):
			fmt.Fprint(w, ": heartbeat\n\n")
		}
	}
}

// expireFeed drops every event so far, as the server's retention does.
func (f *fakeCP) expireFeed() {
	f.mu.Lock()
	f.feed = nil
	f.oldest = f.nextID + 1
	f.mu.Unlock()
}

// dropStreams cuts every open stream.
func (f *fakeCP) dropStreams() {
	f.mu.Lock()
	close(f.drop)
	f.drop = make(chan struct{})
	f.mu.Unlock()
}

// ---- usage ----

func (f *fakeCP) postUsage(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.usagePosts++
	switch {
	case f.usageDown:
		f.mu.Unlock()
		problemReply(w, http.StatusServiceUnavailable, "database unavailable")
		return
	case f.failUsage > 0:
		f.failUsage--
		f.mu.Unlock()
		problemReply(w, http.StatusServiceUnavailable, "database unavailable")
		return
	case f.rejectUsage > 0:
		f.rejectUsage--
		f.mu.Unlock()
		problemReply(w, http.StatusUnprocessableEntity, "invalid batch", "deltas[0].units", "must be a decimal")
		return
	}
	f.mu.Unlock()
	if r.Header.Get("Content-Encoding") != "gzip" {
		problemReply(w, http.StatusBadRequest, "batches are gzipped")
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	var b wire.UsageBatch
	if err := json.NewDecoder(zr).Decode(&b); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	if b.InstanceID == "" || b.Sequence <= 0 || len(b.Deltas)+len(b.GrantDraws)+len(b.Events)+len(b.VoucherDebits)+len(b.CapUses) == 0 || len(b.Deltas) > wire.MaxDeltas {
		problemReply(w, http.StatusUnprocessableEntity, "bad batch identity or size")
		return
	}
	key := b.InstanceID + "/" + strconv.FormatInt(b.Sequence, 10)
	f.mu.Lock()
	ack := wire.UsageAck{Sequence: b.Sequence}
	if _, dup := f.committed[key]; dup {
		f.duplicates++
		ack.Duplicate = true
	} else {
		if last := f.lastSeq[b.InstanceID]; b.Sequence != last+1 {
			f.seqViolations = append(f.seqViolations, fmt.Sprintf("%s: %d after %d", b.InstanceID, b.Sequence, last))
		}
		f.lastSeq[b.InstanceID] = b.Sequence
		f.committed[key] = b
		// As the server does: usage of customers it does not know, or stamped with an
		// earlier creation than the customer's (created again since), is kept apart.
		unattributed := func(kind string, i int, customer string, createdAt *time.Time) bool {
			reason := ""
			switch rec := f.lookupLocked(customer); {
			case rec == nil:
				reason = wire.ReasonUnknownCustomer
			case createdAt != nil && createdAt.Before(rec.CreatedAt):
				reason = wire.ReasonCustomerRecreated
			default:
				return false
			}
			u := wire.Unattributed{Kind: kind, Index: i, Customer: customer, Reason: reason}
			ack.Unattributed = append(ack.Unattributed, u)
			f.unattributed = append(f.unattributed, u)
			return true
		}
		for i, e := range b.Events {
			unattributed(wire.RecordEvent, i, e.Customer, nil)
		}
		for i, d := range b.GrantDraws {
			if unattributed(wire.RecordGrantDraw, i, d.Customer, d.CustomerCreatedAt) {
				continue
			}
			k := fakeDrawKey{d.Customer, d.GrantID, d.PeriodStart.UTC()}
			cur, ok := f.draws[k]
			if !ok {
				cur = dec.Zero
			}
			f.draws[k], _ = cur.Add(dec.MustParse(d.Units))
		}
		for i, u := range b.CapUses {
			if unattributed(wire.RecordCapUse, i, u.Customer, u.CustomerCreatedAt) {
				continue
			}
			f.commitCapUse(b.InstanceID, b.Leased, u)
		}
		for i, d := range b.Deltas {
			if unattributed(wire.RecordDelta, i, d.Customer, d.CustomerCreatedAt) {
				continue
			}
			if b.Leased {
				f.leases.commit(b.InstanceID, d)
			}
			ack.Accepted++
			k := fakeMeterKey{d.Customer, d.Entitlement, d.PeriodStart.UTC()}
			tot := f.totals[k]
			if tot == nil {
				tot = &fakeTotal{credit: d.Credit, units: dec.Zero, overhead: dec.Zero, granted: dec.Zero}
				f.totals[k] = tot
			}
			tot.units, _ = tot.units.Add(dec.MustParse(d.Units))
			tot.overhead, _ = tot.overhead.Add(dec.MustParse(d.Overhead))
			tot.calls += d.Calls
			if d.GrantCovered != "" {
				tot.granted, _ = tot.granted.Add(dec.MustParse(d.GrantCovered))
				tot.grantedSent++
			}
		}
	}
	drop := !ack.Duplicate && f.commitThenDrop > 0
	if drop {
		f.commitThenDrop--
	}
	f.mu.Unlock()
	if drop {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(ack)
}

// grantCovered is the committed grant coverage of a customer's entitlement over every
// period, and how many deltas carried it.
func (f *fakeCP) grantCovered(customer, ent string) (float64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sum, n := dec.Zero, 0
	for k, t := range f.totals {
		if k.customer == customer && k.ent == ent {
			sum, _ = sum.Add(t.granted)
			n += t.grantedSent
		}
	}
	return dec.Float64(sum), n
}

// units is the committed usage of a customer's entitlement over every period.
func (f *fakeCP) units(customer, ent string) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	sum := dec.Zero
	for k, t := range f.totals {
		if k.customer == customer && k.ent == ent {
			sum, _ = sum.Add(t.units)
		}
	}
	return dec.Float64(sum)
}

func (f *fakeCP) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

func (f *fakeCP) get(fn func()) { f.set(fn) }

// ---- customers ----

func (f *fakeCP) custOp(h func(w http.ResponseWriter, r *http.Request, rec *fakeRecord)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.failCust > 0 {
			f.failCust--
			problemReply(w, http.StatusInternalServerError, "boom")
			return
		}
		rec := f.lookupLocked(r.PathValue("id"))
		if rec == nil {
			problemReply(w, http.StatusNotFound, fmt.Sprintf("no customer %q", r.PathValue("id")))
			return
		}
		h(w, r, rec)
	}
}

func (f *fakeCP) lookupLocked(id string) *fakeRecord {
	if c := f.customers[id]; c != nil {
		return c
	}
	for _, c := range f.customers {
		for _, a := range c.AltIDs {
			if a == id {
				return c
			}
		}
	}
	return nil
}

func (f *fakeCP) plans() map[string]bool {
	return map[string]bool{"free": true, "pro": true}
}

func reply(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// changeLocked bumps a record's revision and appends its change event.
func (f *fakeCP) changeLocked(rec *fakeRecord, ch map[string]any) {
	rec.Revision++
	rec.UpdatedAt = time.Now().UTC()
	if rec.Plan == "" {
		rec.ResolvedPlan = "free"
	} else {
		rec.ResolvedPlan = rec.Plan
	}
	ch["id"] = rec.ID
	ch["revision"] = rec.Revision
	ch["customer"] = rec
	data, _ := json.Marshal(ch)
	f.appendLocked(wire.EventCust, string(data))
}

// addCustomer creates a customer as another client of the API would.
func (f *fakeCP) addCustomer(id, plan string) *fakeRecord {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now().UTC()
	rec := &fakeRecord{ID: id, Plan: plan, Type: "user", Label: "User", Refs: []string{}, AltIDs: []string{},
		Metadata: map[string]any{}, BillingAnchor: now, CreatedAt: now, Overrides: map[string]json.RawMessage{}, Topups: []fakeTopup{}}
	f.customers[id] = rec
	f.changeLocked(rec, map[string]any{"op": "upsert"})
	return rec
}

// mutate changes a customer as another client of the API would, announcing it.
func (f *fakeCP) mutate(id string, op string, fn func(rec *fakeRecord, ch map[string]any)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	rec := f.customers[id]
	if rec == nil {
		f.t.Fatalf("fake: no customer %q", id)
	}
	ch := map[string]any{"op": op}
	fn(rec, ch)
	if op == "delete" {
		delete(f.customers, id)
		rec.Revision++
		data, _ := json.Marshal(map[string]any{"id": id, "op": "delete", "revision": rec.Revision})
		f.appendLocked(wire.EventCust, string(data))
		return
	}
	f.changeLocked(rec, ch)
}

func (f *fakeCP) createCustomer(w http.ResponseWriter, r *http.Request) {
	var req struct {
		ID            string         `json:"id"`
		Plan          string         `json:"plan"`
		Type          *string        `json:"type"`
		Label         *string        `json:"label"`
		Refs          []string       `json:"refs"`
		AltIDs        []string       `json:"alt_ids"`
		Metadata      map[string]any `json:"metadata"`
		Timezone      string         `json:"timezone"`
		BillingAnchor *time.Time     `json:"billing_anchor"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failCust > 0 {
		f.failCust--
		problemReply(w, http.StatusInternalServerError, "boom")
		return
	}
	if req.Plan != "" && !f.plans()[req.Plan] {
		problemReply(w, http.StatusUnprocessableEntity, "invalid customer", "plan", fmt.Sprintf("unknown plan %q", req.Plan))
		return
	}
	if f.lookupLocked(req.ID) != nil {
		problemReply(w, http.StatusConflict, fmt.Sprintf("customer %q already exists: use PATCH to update it", req.ID))
		return
	}
	now := time.Now().UTC()
	rec := &fakeRecord{ID: req.ID, Plan: req.Plan, Type: "user", Label: "User", Refs: req.Refs, AltIDs: req.AltIDs,
		Metadata: req.Metadata, Timezone: req.Timezone, BillingAnchor: now, CreatedAt: now,
		Overrides: map[string]json.RawMessage{}, Topups: []fakeTopup{}}
	if rec.Plan == "" {
		rec.Plan = "free"
	}
	if req.Type != nil {
		rec.Type = *req.Type
	}
	if req.Label != nil {
		rec.Label = *req.Label
	}
	if req.BillingAnchor != nil {
		rec.BillingAnchor = *req.BillingAnchor
	}
	if rec.Refs == nil {
		rec.Refs = []string{}
	}
	if rec.AltIDs == nil {
		rec.AltIDs = []string{}
	}
	if rec.Metadata == nil {
		rec.Metadata = map[string]any{}
	}
	f.customers[rec.ID] = rec
	f.changeLocked(rec, map[string]any{"op": "upsert"})
	reply(w, http.StatusCreated, rec)
}

func (f *fakeCP) getCustomer(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	reply(w, http.StatusOK, rec)
}

func (f *fakeCP) patchCustomer(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	var req struct {
		Type     *string        `json:"type"`
		Label    *string        `json:"label"`
		Refs     *[]string      `json:"refs"`
		Metadata map[string]any `json:"metadata"`
		Timezone *string        `json:"timezone"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Type != nil {
		rec.Type = *req.Type
	}
	if req.Label != nil {
		rec.Label = *req.Label
	}
	if req.Refs != nil {
		rec.Refs = *req.Refs
	}
	if req.Metadata != nil {
		rec.Metadata = req.Metadata
	}
	if req.Timezone != nil {
		rec.Timezone = *req.Timezone
	}
	f.changeLocked(rec, map[string]any{"op": "upsert"})
	reply(w, http.StatusOK, rec)
}

func (f *fakeCP) deleteCustomer(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	delete(f.customers, rec.ID)
	rec.Revision++
	data, _ := json.Marshal(map[string]any{"id": rec.ID, "op": "delete", "revision": rec.Revision})
	f.appendLocked(wire.EventCust, string(data))
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeCP) setPlan(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	var req struct {
		Plan            string `json:"plan"`
		OverwriteMeters bool   `json:"overwrite_meters"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	if !f.plans()[req.Plan] {
		problemReply(w, http.StatusUnprocessableEntity, "invalid plan change", "plan", fmt.Sprintf("unknown plan %q", req.Plan))
		return
	}
	prev := rec.ResolvedPlan
	rec.Plan = req.Plan
	f.changeLocked(rec, map[string]any{"op": "plan", "plan": req.Plan, "previous_plan": prev, "overwrite_meters": req.OverwriteMeters})
	reply(w, http.StatusOK, rec)
}

func (f *fakeCP) putOverride(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	var req struct {
		Value     string  `json:"value"`
		ExpiresAt *string `json:"expires_at"`
		Mode      string  `json:"mode"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	ent := r.PathValue("ent")
	if ent != "api" {
		problemReply(w, http.StatusUnprocessableEntity, "invalid override", "entitlement", fmt.Sprintf("unknown entitlement %q: no plan of the active policy defines it", ent))
		return
	}
	if _, err := dec.Parse(req.Value); err != nil {
		problemReply(w, http.StatusUnprocessableEntity, "invalid override", "value", "not a quantity")
		return
	}
	o := limitr.Override{Value: req.Value, Mode: req.Mode}
	if req.ExpiresAt != nil {
		o.ExpiresAt, _ = time.Parse(time.RFC3339, *req.ExpiresAt)
	}
	spec, _ := json.Marshal(o)
	rec.Overrides[ent] = spec
	f.changeLocked(rec, map[string]any{"op": "override", "entitlement": ent, "override": o})
	reply(w, http.StatusOK, rec)
}

func (f *fakeCP) deleteOverride(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	ent := r.PathValue("ent")
	if _, ok := rec.Overrides[ent]; !ok {
		problemReply(w, http.StatusNotFound, fmt.Sprintf("customer %q has no override for %q", rec.ID, ent))
		return
	}
	delete(rec.Overrides, ent)
	f.changeLocked(rec, map[string]any{"op": "override", "entitlement": ent, "removed": true})
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeCP) applyTopup(w http.ResponseWriter, r *http.Request, rec *fakeRecord) {
	var req struct {
		Topup string `json:"topup"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		problemReply(w, http.StatusBadRequest, err.Error())
		return
	}
	t := f.topupLocked(rec, req.Topup)
	if t == nil {
		problemReply(w, http.StatusUnprocessableEntity, "invalid topup", "topup", fmt.Sprintf("%q is not a topup of the customer's plan", req.Topup))
		return
	}
	f.changeLocked(rec, map[string]any{"op": "topup", "topup": t})
	reply(w, http.StatusCreated, t)
}

func (f *fakeCP) topupLocked(rec *fakeRecord, name string) *fakeTopup {
	def, ok := topupDefs[name]
	if !ok {
		return nil
	}
	f.grantSeq++
	t := fakeTopup{ID: fmt.Sprintf("tp-%d", f.grantSeq), Topup: name, GrantID: fmt.Sprintf("lgrnt_fake%08d", f.grantSeq),
		Credit: def.credit, Value: def.value, Currency: "rune", AppliedAt: time.Now().UTC()}
	rec.Topups = append(rec.Topups, t)
	return &t
}

func (f *fakeCP) getState(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	f.mu.Lock()
	f.stateCalls[id]++
	delay := f.stateDelay
	if f.stateDown {
		f.mu.Unlock()
		problemReply(w, http.StatusServiceUnavailable, "the database is unavailable; retry shortly")
		return
	}
	rec := f.lookupLocked(id)
	var st wire.CustomerState
	if rec != nil {
		st.Customer, _ = json.Marshal(rec)
		st.Meters = map[string][]wire.MeterTotal{}
		for k, t := range f.totals {
			if k.customer == rec.ID {
				st.Meters[k.ent] = append(st.Meters[k.ent], wire.MeterTotal{Credit: t.credit, PeriodStart: k.period,
					Units: t.units.String(), Overhead: t.overhead.String(), Price: "0"})
			}
		}
		for k, u := range f.draws {
			if k.customer == rec.ID {
				st.GrantDraws = append(st.GrantDraws, wire.GrantDraw{Customer: k.customer, GrantID: k.grant, PeriodStart: k.period, Units: u.String()})
			}
		}
	}
	f.mu.Unlock()
	time.Sleep(delay)
	if rec == nil {
		problemReply(w, http.StatusNotFound, fmt.Sprintf("no customer %q", id))
		return
	}
	reply(w, http.StatusOK, st)
}

// drawn is what the server has committed as drawn from a customer's grants.
func (f *fakeCP) drawn(customer string) float64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	var sum float64
	for k, u := range f.draws {
		if k.customer == customer {
			sum += dec.Float64(u)
		}
	}
	return sum
}

// commitUsage records usage as if another instance had sent it.
func (f *fakeCP) commitUsage(customer, ent, credit string, period time.Time, units string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := fakeMeterKey{customer, ent, period.UTC()}
	tot := f.totals[k]
	if tot == nil {
		tot = &fakeTotal{credit: credit, units: dec.Zero, overhead: dec.Zero}
		f.totals[k] = tot
	}
	tot.units, _ = tot.units.Add(dec.MustParse(units))
}
