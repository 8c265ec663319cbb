package api

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/limitr/limitr/internal/httpx/problem"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// Cloud sync: the SDK endpoints, all for SDK keys only (the environment comes from the
// key; admin keys get 403).
//
//	POST /v1/sdk/usage                commit a usage batch (gzip or plain JSON wire.UsageBatch)
//	GET  /v1/sdk/stream               server-sent events: hello, then policy and customer changes
//	GET  /v1/sdk/customers/:id/state  hydrate a customer: its record, committed meter totals and grant draws
//
// GET /v1/sdk/policy (policies.go) serves the active policy itself.

// UsageChannel is the bus channel that wakes aggregation workers after a usage batch
// commits; the payload is "<tenant id>:<environment id>".
const UsageChannel = "limitr:usage"

// Tunables of the sync endpoints.
const (
	// usagePeriodWindow bounds a delta's period start around now. A non-resetting
	// meter's period starts when the meter was created, so an older start is also
	// accepted when it is not before its customer's creation (less a day of skew).
	usagePeriodWindow = 400 * 24 * time.Hour
	usageClockSkew    = 24 * time.Hour
	// maxUsageEvents bounds audit events per batch (the decompressed size bounds them
	// first in practice).
	maxUsageEvents = 100_000
	// maxDecimalText bounds a decimal's text.
	maxDecimalText = 64
	// maxFieldErrors bounds the errors listed in one problem.
	maxFieldErrors = wire.MaxDeltas
	// statePeriods is how many periods per entitlement the state endpoint returns.
	statePeriods = 2
	// streamPage is how many feed entries one read of the change feed takes.
	streamPage = 500

	defaultStreamHeartbeat = 15 * time.Second
	defaultStreamPoll      = 5 * time.Second
)

// syncState is the server's cloud-sync machinery: the stream wake-up hub, the stream
// timings (tests shorten them) and metrics.
type syncState struct {
	heartbeat atomic.Int64 // nanoseconds
	poll      atomic.Int64 // nanoseconds
	hub       *wakeHub
	// usageWake queues worker wake-ups, published off the request path so a slow or
	// absent Redis never delays an ack.
	usageWake chan string

	batches *prometheus.CounterVec
	deltas  prometheus.Counter
	streams prometheus.Gauge
}

func (s *Server) initSync() {
	st := &syncState{hub: newWakeHub(s.ctx, s.bus)}
	st.heartbeat.Store(int64(defaultStreamHeartbeat))
	st.poll.Store(int64(defaultStreamPoll))
	st.batches = register(s.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "limitr_usage_batches_total",
		Help: "Usage batches received from SDKs, by outcome (committed, duplicate, rejected, unavailable).",
	}, []string{"outcome"}))
	st.deltas = register(s.reg, prometheus.NewCounter(prometheus.CounterOpts{
		Name: "limitr_usage_deltas_committed_total",
		Help: "Usage deltas committed from SDK batches.",
	}))
	st.streams = register(s.reg, prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "limitr_sdk_streams",
		Help: "Open SDK push streams on this replica.",
	}))
	st.usageWake = make(chan string, 1024)
	go st.publishWakeUps(s.ctx, s.bus, s)
	s.sync = st
}

// wakeWorkers queues a wake-up for the aggregation workers; when the queue is full the
// wake-up is dropped (workers also poll).
func (st *syncState) wakeWorkers(payload string) {
	select {
	case st.usageWake <- payload:
	default:
	}
}

func (st *syncState) publishWakeUps(ctx context.Context, b bus.Bus, s *Server) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-st.usageWake:
			if err := b.Publish(ctx, UsageChannel, []byte(p)); err != nil && ctx.Err() == nil {
				s.logger.Warn("api: could not wake the usage workers; they pick the batch up on their next poll", "err", err)
			}
		}
	}
}

// register registers c, or returns the collector already registered under its name.
func register[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if prev, ok := are.ExistingCollector.(C); ok {
				return prev
			}
		}
	}
	return c
}

// setStreamTimings sets the stream's heartbeat and safety-poll intervals (tests).
func (s *Server) setStreamTimings(heartbeat, poll time.Duration) {
	if heartbeat > 0 {
		s.sync.heartbeat.Store(int64(heartbeat))
	}
	if poll > 0 {
		s.sync.poll.Store(int64(poll))
	}
}

func (s *Server) syncRoutes(g *echo.Group) {
	s.initSync()
	g.POST("/sdk/usage", s.postUsage, sdkOnly)
	g.GET("/sdk/stream", s.sdkStream, sdkOnly)
	g.GET("/sdk/customers/:id/state", s.sdkCustomerState, sdkOnly)
}

// sdkOnly rejects admin keys: these endpoints act for the key's environment.
func sdkOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := principal(c)
		if p == nil || p.IsAdmin() || p.EnvironmentID == nil {
			return problem.New(http.StatusForbidden, "this endpoint is for SDK keys: create one with POST /v1/keys {\"kind\":\"sdk\",\"environment\":...}")
		}
		return next(c)
	}
}

// sdkEnvironment is the SDK key's environment.
func sdkEnvironment(c echo.Context) store.Environment {
	p := principal(c)
	return store.Environment{ID: *p.EnvironmentID, TenantID: p.TenantID, Name: p.Environment}
}

// syncUnavailable is unavailable for the SDK endpoints, which are retried by the
// SDK: every failure to reach or keep a database connection is a 503 with
// Retry-After, not only the ones isConnError recognises by their message.
func (s *Server) syncUnavailable(err error) error {
	if err == nil {
		return nil
	}
	var p *problem.Problem
	if errors.As(err, &p) {
		return p
	}
	if isConnError(err) || isTransientDBError(err) {
		pr := problem.New(http.StatusServiceUnavailable, "the database is unavailable; retry shortly")
		pr.RetryAfter = time.Second
		return pr
	}
	return s.unavailable(err)
}

func isTransientDBError(err error) bool {
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return true
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		c := pgErr.Code
		// connection exceptions, insufficient resources, operator intervention
		// (shutdown, cannot connect now), serialization failure and deadlock.
		return strings.HasPrefix(c, "08") || strings.HasPrefix(c, "53") || strings.HasPrefix(c, "57P") || c == "40001" || c == "40P01"
	}
	return false
}

// ---- POST /v1/sdk/usage ----

// postUsage commits a usage batch: read (gzip or plain, size-bounded), decode strictly,
// validate every field, then in one transaction resolve the customers, record the
// batch key and COPY the deltas and events. A batch key seen before answers 200 with
// duplicate=true and writes nothing. A batch that fails anywhere writes nothing.
func (s *Server) postUsage(c echo.Context) error {
	env := sdkEnvironment(c)
	raw, err := readUsageBody(c.Request())
	if err != nil {
		s.sync.batches.WithLabelValues("rejected").Inc()
		return err
	}
	in, err := decodeUsageBatch(raw)
	if err != nil {
		s.sync.batches.WithLabelValues("rejected").Inc()
		return err
	}
	now := time.Now()
	v := validateUsageBatch(in, now)
	if len(v.errs) > 0 {
		s.sync.batches.WithLabelValues("rejected").Inc()
		return problem.Validation(invalidBatch(len(v.errs)), v.errs)
	}
	b := v.batch
	b.TenantID, b.EnvironmentID = env.TenantID, env.ID
	ctx := c.Request().Context()
	var duplicate bool
	err = s.store.InTx(ctx, func(tx pgx.Tx) error {
		found, err := store.ResolveUsageCustomers(ctx, tx, env.TenantID, env.ID, v.names)
		if err != nil {
			return err
		}
		errs, unknown := v.resolve(found)
		if len(errs) > 0 {
			// A retry of a batch committed before its customer was deleted is still a
			// duplicate, not an error.
			done, err := store.UsageBatchCommitted(ctx, tx, env.TenantID, env.ID, b.InstanceID, b.Sequence)
			if err != nil {
				return err
			}
			if done {
				duplicate = true
				return nil
			}
			if unknown == 0 {
				return problem.Validation(invalidBatch(len(errs)), errs)
			}
			return problem.Validation(fmt.Sprintf("%s: %d name customers that do not exist in environment %q", invalidBatch(len(errs)), unknown, env.Name), errs).
				WithType("unknown-customer")
		}
		duplicate, err = store.InsertUsageBatch(ctx, tx, b)
		return err
	})
	if err != nil {
		var p *problem.Problem
		if errors.As(err, &p) {
			s.sync.batches.WithLabelValues("rejected").Inc()
			return p
		}
		err = s.syncUnavailable(err)
		if errors.As(err, &p) && p.Status == http.StatusServiceUnavailable {
			s.sync.batches.WithLabelValues("unavailable").Inc()
		}
		return err
	}
	ack := wire.UsageAck{Sequence: b.Sequence, Duplicate: duplicate}
	if duplicate {
		s.sync.batches.WithLabelValues("duplicate").Inc()
	} else {
		ack.Accepted = len(b.Deltas)
		s.sync.batches.WithLabelValues("committed").Inc()
		s.sync.deltas.Add(float64(len(b.Deltas)))
		s.sync.wakeWorkers(env.TenantID.String() + ":" + env.ID.String())
	}
	return c.JSON(http.StatusOK, ack)
}

func invalidBatch(problems int) string {
	if problems == 1 {
		return "the usage batch is invalid (1 problem)"
	}
	return fmt.Sprintf("the usage batch is invalid (%d problems)", problems)
}

// readUsageBody reads the request body, decompressing gzip. The compressed size is
// bounded by the server's body limit (echo's BodyLimit middleware), the decompressed
// size by wire.MaxBatchRaw: both 413.
func readUsageBody(r *http.Request) ([]byte, error) {
	enc := strings.ToLower(strings.TrimSpace(r.Header.Get(echo.HeaderContentEncoding)))
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooLarge *http.MaxBytesError
		var he *echo.HTTPError
		if errors.As(err, &tooLarge) || errors.As(err, &he) && he.Code == http.StatusRequestEntityTooLarge {
			return nil, problem.New(http.StatusRequestEntityTooLarge, "the usage batch is larger than the server's body limit: flush smaller batches")
		}
		return nil, problem.New(http.StatusBadRequest, "could not read the request body")
	}
	switch enc {
	case "", "identity":
		if len(body) > wire.MaxBatchRaw {
			return nil, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the usage batch is larger than %d bytes", wire.MaxBatchRaw))
		}
		return body, nil
	case "gzip", "x-gzip":
		return gunzipBounded(body, wire.MaxBatchRaw)
	}
	return nil, problem.New(http.StatusUnsupportedMediaType, fmt.Sprintf("Content-Encoding %q is not supported: send gzip or an uncompressed body", enc))
}

// gunzipBounded decompresses body, refusing more than max bytes of output (a gzip
// bomb stops after max+1 bytes).
func gunzipBounded(body []byte, max int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, problem.New(http.StatusBadRequest, "the body is not valid gzip: "+err.Error())
	}
	defer zr.Close()
	out, err := io.ReadAll(io.LimitReader(zr, max+1))
	if int64(len(out)) > max {
		return nil, problem.New(http.StatusRequestEntityTooLarge, fmt.Sprintf("the usage batch decompresses to more than %d bytes", max))
	}
	if err != nil {
		return nil, problem.New(http.StatusBadRequest, "the body is not valid gzip: "+err.Error())
	}
	return out, nil
}

// decodeUsageBatch decodes strictly: unknown fields, wrong types and trailing data are
// 4xx problems.
func decodeUsageBatch(raw []byte) (*wire.UsageBatch, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, problem.New(http.StatusBadRequest, "request body is empty: send a JSON usage batch")
	}
	var b wire.UsageBatch
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		var pe *time.ParseError
		if errors.As(err, &pe) {
			return nil, problem.New(http.StatusBadRequest, "malformed timestamp: times are RFC 3339, such as 2025-01-31T00:00:00Z: "+err.Error())
		}
		return nil, jsonProblem(err)
	}
	if dec.More() {
		return nil, problem.New(http.StatusBadRequest, "request body has data after the JSON object")
	}
	return &b, nil
}

// usageValidation is a structurally valid batch waiting for its customers.
type usageValidation struct {
	batch store.UsageBatch
	errs  []problem.FieldError
	// names are the distinct customer names of the deltas and events.
	names []string
	now   time.Time
}

func (v *usageValidation) add(path, msg string) {
	if len(v.errs) < maxFieldErrors {
		v.errs = append(v.errs, problem.FieldError{Path: path, Message: msg})
	}
}

func (v *usageValidation) addFE(fe *problem.FieldError) {
	if fe != nil {
		v.add(fe.Path, fe.Message)
	}
}

// at adds fe, whose path is a field of the list item kind[i].
func (v *usageValidation) at(kind string, i int, fe *problem.FieldError) {
	if fe != nil {
		v.add(itemPath(kind, i, fe.Path), fe.Message)
	}
}

func itemPath(kind string, i int, field string) string {
	return kind + "[" + strconv.Itoa(i) + "]." + field
}

// validateUsageBatch checks every field that can be checked without the database.
func validateUsageBatch(in *wire.UsageBatch, now time.Time) *usageValidation {
	v := &usageValidation{now: now}
	b := &v.batch
	if fe := checkInstanceID(in.InstanceID); fe != nil {
		v.addFE(fe)
	}
	if in.Sequence < 1 {
		v.add("sequence", "must be 1 or more: sequences start at 1")
	}
	if in.PolicyVersion < 0 {
		v.add("policy_version", "must not be negative")
	}
	if len(in.Deltas) > wire.MaxDeltas {
		v.add("deltas", fmt.Sprintf("has %d entries; at most %d per batch", len(in.Deltas), wire.MaxDeltas))
	}
	if len(in.Events) > maxUsageEvents {
		v.add("events", fmt.Sprintf("has %d entries; at most %d per batch", len(in.Events), maxUsageEvents))
	}
	if len(in.GrantDraws) > wire.MaxDeltas {
		v.add("grant_draws", fmt.Sprintf("has %d entries; at most %d per batch", len(in.GrantDraws), wire.MaxDeltas))
	}
	if len(in.Deltas) > wire.MaxDeltas || len(in.Events) > maxUsageEvents || len(in.GrantDraws) > wire.MaxDeltas {
		return v
	}
	b.InstanceID, b.Sequence, b.PolicyVersion = in.InstanceID, in.Sequence, in.PolicyVersion
	if !in.SentAt.IsZero() && in.SentAt.Year() >= 1 && in.SentAt.Year() <= 9999 {
		t := in.SentAt.UTC()
		b.SentAt = &t
	}
	seen := map[string]bool{}
	addName := func(n string) {
		if !seen[n] {
			seen[n] = true
			v.names = append(v.names, n)
		}
	}
	b.Deltas = make([]store.UsageDelta, len(in.Deltas))
	for i := range in.Deltas {
		d := &in.Deltas[i]
		out := &b.Deltas[i]
		ok := true
		for _, f := range []struct{ name, val string }{{"customer", d.Customer}, {"entitlement", d.Entitlement}, {"credit", d.Credit}} {
			if fe := checkUsageName(f.name, f.val); fe != nil {
				v.at("deltas", i, fe)
				ok = false
			}
		}
		switch {
		case d.PeriodStart.IsZero():
			v.add(itemPath("deltas", i, "period_start"), "is required")
		case d.PeriodStart.After(now.Add(usagePeriodWindow)):
			v.add(itemPath("deltas", i, "period_start"), fmt.Sprintf("%s is more than %d days in the future", d.PeriodStart.UTC().Format(time.RFC3339), int(usagePeriodWindow/(24*time.Hour))))
		}
		var fe *problem.FieldError
		if out.Units, fe = parseUsageDecimal("units", d.Units); fe != nil {
			v.at("deltas", i, fe)
		}
		if out.Overhead, fe = parseUsageDecimal("overhead", d.Overhead); fe != nil {
			v.at("deltas", i, fe)
		}
		if out.Price, fe = parseUsageDecimal("price", d.Price); fe != nil {
			v.at("deltas", i, fe)
		}
		if d.Calls < 0 {
			v.add(itemPath("deltas", i, "calls"), "must not be negative")
		}
		out.CustomerID, out.Entitlement, out.Credit = d.Customer, d.Entitlement, d.Credit
		out.PeriodStart, out.Calls = d.PeriodStart.UTC(), d.Calls
		if ok {
			addName(d.Customer)
		}
	}
	b.GrantDraws = make([]store.GrantDraw, len(in.GrantDraws))
	for i := range in.GrantDraws {
		d := &in.GrantDraws[i]
		out := &b.GrantDraws[i]
		ok := true
		for _, f := range []struct{ name, val string }{{"customer", d.Customer}, {"grant_id", d.GrantID}} {
			if fe := checkUsageName(f.name, f.val); fe != nil {
				v.at("grant_draws", i, fe)
				if f.name == "customer" {
					ok = false
				}
			}
		}
		switch {
		case d.PeriodStart.IsZero():
			v.add(itemPath("grant_draws", i, "period_start"), "is required")
		case d.PeriodStart.After(now.Add(usagePeriodWindow)):
			v.add(itemPath("grant_draws", i, "period_start"), fmt.Sprintf("%s is more than %d days in the future", d.PeriodStart.UTC().Format(time.RFC3339), int(usagePeriodWindow/(24*time.Hour))))
		}
		var fe *problem.FieldError
		if out.Units, fe = parseUsageDecimal("units", d.Units); fe != nil {
			v.at("grant_draws", i, fe)
		} else if out.Units.IsNeg() {
			v.add(itemPath("grant_draws", i, "units"), "must not be negative: a draw takes from a grant")
		}
		out.CustomerID, out.GrantID, out.PeriodStart = d.Customer, d.GrantID, d.PeriodStart.UTC()
		if ok {
			addName(d.Customer)
		}
	}
	b.Events = make([]store.UsageEvent, len(in.Events))
	ids := make(map[string]int, len(in.Events))
	for i := range in.Events {
		e := &in.Events[i]
		out := &b.Events[i]
		ok := true
		for _, f := range []struct{ name, val string }{{"id", e.ID}, {"customer", e.Customer}, {"entitlement", e.Entitlement}} {
			if fe := checkUsageName(f.name, f.val); fe != nil {
				v.at("events", i, fe)
				if f.name == "customer" {
					ok = false
				}
			}
		}
		if j, dup := ids[e.ID]; dup && e.ID != "" {
			v.add(itemPath("events", i, "id"), fmt.Sprintf("repeats events[%d].id: event ids are unique per instance", j))
		}
		ids[e.ID] = i
		if e.Caller != "" {
			v.at("events", i, checkUsageName("caller", e.Caller))
		}
		var fe *problem.FieldError
		if out.Units, fe = parseUsageDecimal("units", e.Units); fe != nil {
			v.at("events", i, fe)
		}
		if out.Overhead, fe = parseUsageDecimal("overhead", e.Overhead); fe != nil {
			v.at("events", i, fe)
		}
		switch {
		case e.At.IsZero():
			v.add(itemPath("events", i, "at"), "is required")
		case e.At.After(now.Add(usagePeriodWindow)) || e.At.Before(now.Add(-usagePeriodWindow)):
			v.add(itemPath("events", i, "at"), fmt.Sprintf("%s is more than %d days from now", e.At.UTC().Format(time.RFC3339), int(usagePeriodWindow/(24*time.Hour))))
		}
		out.EventID, out.CustomerID, out.CallerID, out.Entitlement = e.ID, e.Customer, e.Caller, e.Entitlement
		out.Allowed, out.At = e.Allowed, e.At.UTC()
		if ok {
			addName(e.Customer)
		}
	}
	return v
}

// resolve checks the batch's customers against what the environment has, rewrites alt
// ids to customer ids, and checks period starts older than the window against the
// customer's creation.
func (v *usageValidation) resolve(found map[string]store.UsageCustomer) (errs []problem.FieldError, unknown int) {
	v.errs = v.errs[:0]
	for i := range v.batch.Deltas {
		d := &v.batch.Deltas[i]
		if !v.resolveCustomer(found, fmt.Sprintf("deltas[%d]", i), &d.CustomerID, &d.PeriodStart) {
			unknown++
		}
	}
	for i := range v.batch.GrantDraws {
		d := &v.batch.GrantDraws[i]
		if !v.resolveCustomer(found, fmt.Sprintf("grant_draws[%d]", i), &d.CustomerID, &d.PeriodStart) {
			unknown++
		}
	}
	for i := range v.batch.Events {
		e := &v.batch.Events[i]
		if !v.resolveCustomer(found, fmt.Sprintf("events[%d]", i), &e.CustomerID, nil) {
			unknown++
		}
	}
	return v.errs, unknown
}

// resolveCustomer rewrites one record's customer (an id or alt id) to the customer id. A
// period start older than the window is a non-resetting meter's or grant's, which
// cannot predate its customer; events have none (period nil).
func (v *usageValidation) resolveCustomer(found map[string]store.UsageCustomer, path string, id *string, period *time.Time) bool {
	c, ok := found[*id]
	if !ok {
		v.add(path+".customer", fmt.Sprintf("no customer %q in this environment", *id))
		return false
	}
	if period != nil && period.Before(v.now.Add(-usagePeriodWindow)) && period.Before(c.CreatedAt.Add(-usageClockSkew)) {
		v.add(path+".period_start", fmt.Sprintf("%s is more than %d days ago and before customer %q was created",
			period.Format(time.RFC3339), int(usagePeriodWindow/(24*time.Hour)), *id))
	}
	*id = c.ID
	return true
}

// checkInstanceID: 1 to wire.MaxInstance characters of [A-Za-z0-9._-].
func checkInstanceID(id string) *problem.FieldError {
	if id == "" {
		return &problem.FieldError{Path: "instance_id", Message: "is required"}
	}
	if len(id) > wire.MaxInstance {
		return &problem.FieldError{Path: "instance_id", Message: fmt.Sprintf("is longer than %d characters", wire.MaxInstance)}
	}
	for i := 0; i < len(id); i++ {
		ch := id[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '.' || ch == '_' || ch == '-') {
			return &problem.FieldError{Path: "instance_id", Message: "may contain only letters, digits, '.', '_' and '-'"}
		}
	}
	return nil
}

// checkUsageName: required, at most 256 bytes of UTF-8 without control characters.
func checkUsageName(path, v string) *problem.FieldError {
	if v == "" {
		return &problem.FieldError{Path: path, Message: "is required"}
	}
	return checkText(path, v, maxIDLength)
}

// parseUsageDecimal parses an exact decimal as the SDK writes it ("12.5", "-3"): no
// exponent, at most 19 fractional digits (after dropping trailing zeros) and 19
// integer digits, so nothing is rounded.
func parseUsageDecimal(path, s string) (num.Dec, *problem.FieldError) {
	bad := func(msg string) (num.Dec, *problem.FieldError) {
		return num.Zero, &problem.FieldError{Path: path, Message: msg}
	}
	if s == "" {
		return bad("is required: an exact decimal written as a string, such as \"12.5\"")
	}
	if len(s) > maxDecimalText {
		return bad(fmt.Sprintf("is longer than %d characters", maxDecimalText))
	}
	if strings.ContainsAny(s, "eE") {
		return bad(fmt.Sprintf("must be a plain decimal such as \"12.5\" (no exponent), got %q", s))
	}
	if i := strings.IndexByte(s, '.'); i >= 0 && len(strings.TrimRight(s[i+1:], "0")) > 19 {
		return bad(fmt.Sprintf("has more than 19 decimal places, got %q", s))
	}
	d, err := num.Parse(s)
	if err != nil {
		return bad(fmt.Sprintf("must be an exact decimal such as \"12.5\", got %q", s))
	}
	return d, nil
}

// ---- GET /v1/sdk/customers/:id/state ----

// sdkCustomerState hydrates a customer: the record GET /v1/environments/:env/customers/:id
// returns (resolved by id or alt id), and its committed meter totals (aggregated plus
// not yet aggregated), the last two periods per entitlement, newest first.
func (s *Server) sdkCustomerState(c echo.Context) error {
	env := sdkEnvironment(c)
	id, err := pathParam(c, "id")
	if err != nil {
		return err
	}
	if checkName("id", id) != nil {
		return problem.New(http.StatusNotFound, "no such customer")
	}
	ctx := c.Request().Context()
	pol, err := s.policyOrNil(ctx, env)
	if err != nil {
		return s.syncUnavailable(err)
	}
	cust, err := s.loadCustomer(ctx, s.pool, pol, env, id, false)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return s.customerErr(err, id)
		}
		return s.syncUnavailable(err)
	}
	rec, err := json.Marshal(cust)
	if err != nil {
		return err
	}
	totals, err := store.CommittedTotals(ctx, s.pool, env.TenantID, env.ID, cust.ID, statePeriods)
	if err != nil {
		return s.syncUnavailable(err)
	}
	meters := make(map[string][]wire.MeterTotal, len(totals))
	for _, t := range totals {
		meters[t.Entitlement] = append(meters[t.Entitlement], wire.MeterTotal{Credit: t.Credit, PeriodStart: t.PeriodStart,
			Units: t.Units, Overhead: t.Overhead, Price: t.Price})
	}
	drawTotals, err := store.CommittedGrantDraws(ctx, s.pool, env.TenantID, env.ID, cust.ID, statePeriods)
	if err != nil {
		return s.syncUnavailable(err)
	}
	var draws []wire.GrantDraw
	for _, d := range drawTotals {
		draws = append(draws, wire.GrantDraw{Customer: cust.ID, GrantID: d.GrantID, PeriodStart: d.PeriodStart, Units: d.Units})
	}
	c.Response().Header().Set(echo.HeaderCacheControl, "private, no-store")
	return c.JSON(http.StatusOK, wire.CustomerState{Customer: rec, Meters: meters, GrantDraws: draws})
}

// ---- GET /v1/sdk/stream ----

// sdkStream is the push stream. It subscribes to the environment's wake-ups first,
// then reads where the feed stands and the active version, so nothing committed after
// the hello can be missed: every change after the resume point is sent, in id order,
// on a wake-up or on the safety poll, whichever comes first.
//
// With Last-Event-ID (or ?cursor=), the changes after it are replayed right after the
// hello, and the hello carries that id, so a connection lost during the replay
// resumes from where it was. Without one, the hello's id is the feed's newest id.
func (s *Server) sdkStream(c echo.Context) error {
	env := sdkEnvironment(c)
	after, resume, err := streamCursor(c)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(c.Request().Context())
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel) // Close ends every stream
	defer stop()
	wake, leave := s.sync.hub.listen(changesChannel(env.TenantID, env.ID))
	defer leave()

	latest, err := store.LatestChangeID(ctx, s.pool, env.TenantID, env.ID)
	if err != nil {
		return s.syncUnavailable(err)
	}
	hello := wire.Hello{Environment: env.Name, Cursor: latest}
	v, err := pgstore.ActiveVersion(ctx, s.pool, env.TenantID, env.ID)
	switch {
	case err == nil:
		hello.PolicyVersion, hello.PolicyHash = v.Number, v.Hash
	case errors.Is(err, pgstore.ErrNotFound):
	default:
		return s.syncUnavailable(err)
	}
	if !resume || after > latest {
		after = latest
	}

	res := c.Response()
	h := res.Header()
	h.Set(echo.HeaderContentType, "text/event-stream")
	h.Set(echo.HeaderCacheControl, "no-cache")
	h.Set("X-Accel-Buffering", "no")
	rc := http.NewResponseController(res.Writer)
	_ = rc.SetWriteDeadline(time.Time{}) // no write timeout for a stream
	res.WriteHeader(http.StatusOK)
	s.sync.streams.Inc()
	defer s.sync.streams.Dec()

	sw := &sseWriter{w: res, rc: rc}
	data, _ := json.Marshal(hello)
	if err := sw.event(after, wire.EventHello, data); err != nil {
		return nil
	}
	last := after
	// catchUp sends every change after last; it reports only write failures (the
	// client is gone). A database failure is logged and retried on the next tick.
	catchUp := func() error {
		for {
			cs, err := store.ChangesSince(ctx, s.pool, env.TenantID, env.ID, last, streamPage)
			if err != nil {
				if ctx.Err() == nil {
					s.logger.Warn("api: stream could not read the change feed; retrying on the next poll", "err", err, "environment", env.Name)
				}
				return nil
			}
			for _, ch := range cs {
				name, data, ok := changeEvent(ch)
				if ok {
					if err := sw.event(ch.ID, name, data); err != nil {
						return err
					}
				}
				last = ch.ID
			}
			if len(cs) < streamPage {
				return nil
			}
		}
	}
	if err := catchUp(); err != nil {
		return nil
	}
	hb := time.NewTicker(time.Duration(s.sync.heartbeat.Load()))
	defer hb.Stop()
	poll := time.NewTicker(time.Duration(s.sync.poll.Load()))
	defer poll.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-poll.C:
		case <-hb.C:
			if err := sw.comment("ping"); err != nil {
				return nil
			}
			continue
		}
		if err := catchUp(); err != nil {
			return nil
		}
	}
}

// streamCursor reads the resume point: Last-Event-ID, else ?cursor=.
func streamCursor(c echo.Context) (int64, bool, error) {
	v := strings.TrimSpace(c.Request().Header.Get("Last-Event-ID"))
	field := "Last-Event-ID"
	if v == "" {
		v, field = c.QueryParam("cursor"), "cursor"
	}
	if v == "" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, false, problem.Validation("invalid stream cursor", []problem.FieldError{{Path: field, Message: "must be an event id this stream sent (a whole number, 0 or more)"}})
	}
	return n, true, nil
}

// changeEvent maps a change-feed entry to its stream event. Policy entries carry
// {version, hash}; customer entries the customers.go customerChange, whose fields
// wire.CustomerChanged mirrors, with the customer id as the subject.
func changeEvent(ch store.Change) (string, []byte, bool) {
	switch ch.Kind {
	case "policy":
		var p wire.PolicyChanged
		if err := json.Unmarshal(ch.Payload, &p); err != nil {
			return "", nil, false
		}
		if p.Version == 0 {
			p.Version, _ = strconv.Atoi(ch.Subject)
		}
		b, err := json.Marshal(p)
		return wire.EventPolicy, b, err == nil
	case "customer":
		var cc wire.CustomerChanged
		if err := json.Unmarshal(ch.Payload, &cc); err != nil {
			return "", nil, false
		}
		cc.ID = ch.Subject
		b, err := json.Marshal(cc)
		return wire.EventCust, b, err == nil
	}
	return "", nil, false
}

// sseWriter writes server-sent events and flushes each one.
type sseWriter struct {
	w   *echo.Response
	rc  *http.ResponseController
	buf bytes.Buffer
}

func (w *sseWriter) event(id int64, name string, data []byte) error {
	w.buf.Reset()
	w.buf.WriteString("id: ")
	w.buf.WriteString(strconv.FormatInt(id, 10))
	w.buf.WriteString("\nevent: ")
	w.buf.WriteString(name)
	w.buf.WriteString("\ndata: ")
	w.buf.Write(data) // compact JSON: no newlines
	w.buf.WriteString("\n\n")
	return w.flush()
}

func (w *sseWriter) comment(text string) error {
	w.buf.Reset()
	w.buf.WriteString(": ")
	w.buf.WriteString(text)
	w.buf.WriteString("\n\n")
	return w.flush()
}

func (w *sseWriter) flush() error {
	if _, err := w.w.Write(w.buf.Bytes()); err != nil {
		return err
	}
	return w.rc.Flush()
}

// wakeHub shares one bus subscription per environment channel among this replica's
// streams (a Redis subscription holds a connection), and fans wake-ups out to them.
// A listener's channel holds one pending wake-up: wake-ups coalesce, and the stream
// re-reads the feed from Postgres anyway.
type wakeHub struct {
	ctx   context.Context
	bus   bus.Bus
	mu    sync.Mutex
	chans map[string]*hubChannel
}

type hubChannel struct {
	listeners map[chan struct{}]struct{}
	cancel    context.CancelFunc
}

func newWakeHub(ctx context.Context, b bus.Bus) *wakeHub {
	return &wakeHub{ctx: ctx, bus: b, chans: map[string]*hubChannel{}}
}

// listen joins channel; leave must be called once.
func (h *wakeHub) listen(channel string) (<-chan struct{}, func()) {
	l := make(chan struct{}, 1)
	h.mu.Lock()
	hc := h.chans[channel]
	fresh := hc == nil
	var ctx context.Context
	if fresh {
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(h.ctx)
		hc = &hubChannel{listeners: map[chan struct{}]struct{}{}, cancel: cancel}
		h.chans[channel] = hc
	}
	hc.listeners[l] = struct{}{}
	h.mu.Unlock()
	if fresh {
		// Subscribe before returning, so a wake-up published after the caller reads
		// the feed reaches it (the memory bus registers at once; Redis sends SUBSCRIBE).
		msgs := h.bus.Subscribe(ctx, channel)
		go h.forward(hc, msgs)
	}
	return l, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		delete(hc.listeners, l)
		if len(hc.listeners) == 0 && h.chans[channel] == hc {
			delete(h.chans, channel)
			hc.cancel()
		}
	}
}

func (h *wakeHub) forward(hc *hubChannel, msgs <-chan []byte) {
	for range msgs {
		h.mu.Lock()
		for l := range hc.listeners {
			select {
			case l <- struct{}{}:
			default:
			}
		}
		h.mu.Unlock()
	}
}
