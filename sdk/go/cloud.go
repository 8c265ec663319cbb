package limitr

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/limitr/limitr/internal/enforcement"
)

// Defaults of cloud mode.
const (
	DefaultBaseURL         = "http://127.0.0.1:8080"
	DefaultFlushInterval   = time.Second
	DefaultFlushSize       = 1000
	DefaultBufferSize      = 100_000
	DefaultRefreshInterval = 2 * time.Second
)

// Errors of cloud mode.
var (
	// ErrNoPolicy is returned by Cloud when the key's environment has no published policy.
	ErrNoPolicy = errors.New("limitr: no policy is published to this environment")
	// ErrSpillLocked is returned by Cloud when another Policy, in this process or
	// another, uses the Spill directory: two writers would send one batch under two
	// identities, and the server would count it twice.
	ErrSpillLocked = errors.New("limitr: the spill directory is in use by another process")
	// ErrUnavailable is returned when a call needs the control plane (to load a customer
	// this instance has not seen) and it cannot be reached. Calls for customers already
	// held go on locally.
	ErrUnavailable = errors.New("limitr: the control plane is unavailable")
)

// CloudOption configures Cloud.
type CloudOption func(*cloudConfig)

type cloudConfig struct {
	baseURL         string
	flushInterval   time.Duration
	flushSize       int
	bufferSize      int
	refreshInterval time.Duration
	httpClient      *http.Client
	logger          *slog.Logger
	overflow        Overflow
	audit           bool
	auditBuffer     int
	noEvents        bool // event forwarding off (cloud_events.go)
	eventBuffer     int
	eventInterval   time.Duration
	fleet           FleetMode
	unreachable     UnreachableRule
	leaseHorizon    time.Duration
	// Tuning the tests use; zero picks the defaults.
	backoffBase  time.Duration
	backoffCap   time.Duration
	streamIdle   time.Duration
	negativeTTL  time.Duration
	requestLimit time.Duration
	hydrateLimit time.Duration
}

// WithAuditMode also sends a record of every metered call (allowed or denied, with an id
// unique to the instance) alongside the usage sums. A record waits in memory until it
// is cut into a batch, where it counts against WithBufferSize like a delta.
//
// Past the bound: at most WithAuditBuffer records (default: the buffer size) wait to
// be cut. When more are made — the API has been unreachable long enough for the
// buffer to fill under Block, or calls outpace the flushes — new records are dropped
// and counted in SyncStats.AuditDropped, so memory stays bounded. The usage sums are
// not affected: billing stays exact; only the per-call audit trail has a gap.
func WithAuditMode() CloudOption { return func(c *cloudConfig) { c.audit = true } }

// WithAuditBuffer bounds the call records audit mode holds before they are cut into a
// batch (default: WithBufferSize). Past it new records are dropped and counted in
// SyncStats.AuditDropped (see WithAuditMode). It is separate from the buffer size so
// a long audit tail can be kept without letting the batch queue grow as large.
func WithAuditBuffer(n int) CloudOption { return func(c *cloudConfig) { c.auditBuffer = n } }

// WithBaseURL sets the control plane's address (default: $LIMITR_BASE_URL, else
// http://127.0.0.1:8080).
func WithBaseURL(u string) CloudOption { return func(c *cloudConfig) { c.baseURL = u } }

// WithFlushInterval sets how often usage is sent (default 1s).
func WithFlushInterval(d time.Duration) CloudOption {
	return func(c *cloudConfig) { c.flushInterval = d }
}

// WithFlushSize sends usage before the interval is up once this many meters and
// grants have pending usage (default 1000).
func WithFlushSize(n int) CloudOption { return func(c *cloudConfig) { c.flushSize = n } }

// WithBufferSize bounds the records (usage deltas, grant draws and audit call records)
// cut into batches and held in memory until the server acknowledges them (default
// 100 000); WithOverflow says what happens past it. Usage not yet cut stays in the
// engine's per-meter sums, which do not grow with the number of calls.
func WithBufferSize(n int) CloudOption { return func(c *cloudConfig) { c.bufferSize = n } }

// WithRefreshInterval sets how often, at most, a customer's committed totals and grant
// draws are re-read from the server after this instance sent usage for it (default
// 2s). A negative value turns the refresh off: instances then see each other's usage
// only when they hydrate a customer (or a stream reset re-reads it).
func WithRefreshInterval(d time.Duration) CloudOption {
	return func(c *cloudConfig) { c.refreshInterval = d }
}

// WithHTTPClient sets the HTTP client. It must not have a Timeout: the push stream is
// a long-lived request (requests are bounded by contexts instead).
func WithHTTPClient(h *http.Client) CloudOption { return func(c *cloudConfig) { c.httpClient = h } }

// WithLogger sets where cloud mode logs (default slog.Default()).
func WithLogger(l *slog.Logger) CloudOption { return func(c *cloudConfig) { c.logger = l } }

// WithOverflow sets what happens when the usage buffer is full because the API is
// unreachable: Block (default), Spill(dir) or Drop.
func WithOverflow(o Overflow) CloudOption { return func(c *cloudConfig) { c.overflow = o } }

// Overflow is a policy for a full usage buffer.
type Overflow struct {
	kind overflowKind
	dir  string
}

type overflowKind uint8

const (
	overflowBlock overflowKind = iota
	overflowSpill
	overflowDrop
)

var (
	// Block stops cutting batches while the buffer is full: usage keeps accumulating in
	// the engine's per-meter sums (bounded by the meters touched, not the calls made)
	// and is sent once the server is back. Nothing is lost while the process lives.
	Block = Overflow{kind: overflowBlock}
	// Drop discards the oldest queued batch to make room, counting it in
	// SyncStats.Dropped. Its usage never reaches the server.
	Drop = Overflow{kind: overflowDrop}
)

// Spill writes batches that do not fit in memory to files in dir (fsynced) and sends
// them later, in order. Files survive a restart: a new Cloud with the same dir sends
// them first.
//
// One Cloud at a time may use a directory: it holds an exclusive lock on dir/.lock
// from Cloud until Close, and a second Cloud on the directory, in this process or
// another, fails with ErrSpillLocked. On Unix the lock is flock(2) and on Windows a
// file opened without sharing: the system releases either when the process dies. On
// other platforms it is a file created exclusively and removed by Close, so one left
// by a crashed process must be removed by hand.
func Spill(dir string) Overflow { return Overflow{kind: overflowSpill, dir: dir} }

func (o Overflow) String() string {
	switch o.kind {
	case overflowSpill:
		return "spill(" + o.dir + ")"
	case overflowDrop:
		return "drop"
	}
	return "block"
}

// SyncStats reports the state of cloud sync. Records are what batches carry: usage
// deltas, grant draws and (in audit mode) call records.
type SyncStats struct {
	Pending    int   // meters and grants with usage not yet cut into a batch
	Queued     int   // records cut into batches held in memory, awaiting the server
	Spilled    int   // records in spill files, awaiting the server
	Sent       int64 // records the server acknowledged (duplicates included)
	Batches    int64 // batches the server acknowledged
	Duplicates int64 // acknowledgements of batches the server had already committed
	Dropped    int64 // records discarded: by the Drop overflow or refused by the server
	Rejected   int64 // the part of Dropped the server refused as invalid
	// Unattributed counts records the server committed without a customer and kept
	// for an operator: usage for customers it does not know or that were re-created
	// (deleted and created again under the same id). They are part of Sent, not of
	// Dropped.
	Unattributed int64
	// AuditPending is the number of call records (audit mode) not yet cut into a
	// batch. AuditDropped counts the call records discarded because AuditPending was
	// at its bound (WithAuditBuffer); the usage sums of those calls are kept.
	AuditPending int
	AuditDropped int64
	LastError    error     // the last sync failure; nil once a batch went through since
	LastFlush    time.Time // when the server last acknowledged a batch
	// PolicyVersion is the version number of the enforced policy; StreamConnected says
	// whether the push stream is up (else the SDK polls).
	PolicyVersion   int
	PolicyUpdatedAt time.Time // when the enforced version was swapped in
	StreamConnected bool
	// Event forwarding (see Cloud, "Events"). EventsPending is the number of distinct
	// events held, waiting or in flight (at most WithEventBuffer). EventsSent and
	// EventsDropped count engine events, each repeat included: a coalesced event sent
	// with count n adds n. EventsDropped counts those lost to a full buffer, a batch
	// the server refused, a server that does not take events, or Close. EventBatches
	// counts the batches the server acknowledged. EventsUnsupported says the server
	// answered that it does not take events (an older control plane): forwarding is off.
	EventsPending     int
	EventsSent        int64
	EventsDropped     int64
	EventBatches      int64
	EventsUnsupported bool
	// Allowance leases (fleet mode Exact, see WithFleetMode). LeaseRequests counts the
	// requests sent; LeaseWaits the calls that waited for one (no lease with room
	// held), LeaseWaitP99 the 99th percentile of those waits (of the last 4,096).
	// LeasesUnsupported says the server grants no leases (an older control plane):
	// hard limits are kept Bounded.
	LeaseRequests     int64
	LeaseWaits        int64
	LeaseWaitP99      time.Duration
	LeasesUnsupported bool
}

// cloud is the state of a Policy in cloud mode.
type cloud struct {
	eng      *enforcement.Engine
	cfg      cloudConfig
	base     string
	token    string
	hc       *http.Client
	log      *slog.Logger
	instance string

	// Policy.
	pmu        sync.Mutex // serialises policy fetches
	etag       string     // guarded by pmu
	serverHash atomic.Pointer[string]
	version    atomic.Int64
	env        atomic.Pointer[string]
	policyAt   atomic.Int64 // unix nanoseconds of the last swap
	streamUp   atomic.Bool
	stale      atomic.Bool // a pushed version could not be fetched: poll even with the stream up

	// Usage (cloud_usage.go).
	umu       sync.Mutex
	queue     []*batch
	queuedMem int
	spilledN  int
	nextSeq   int64
	stats     SyncStats
	spillSeq  int64
	wakeSend  chan struct{}
	progress  chan struct{} // pulsed whenever a batch leaves the queue
	pending   func() int
	warned    map[string]time.Time // last warning of unattributed usage, per customer; the sender's

	events *forwarder // nil when event forwarding is off (cloud_events.go)

	leases *leaser // allowance leases (cloud_leases.go)

	// Customers (cloud_customers.go).
	hmu         sync.Mutex
	flights     map[string]*flight
	negative    map[string]time.Time
	causes      map[string]error // why a negative result was not a plain "unknown"
	revs        map[string]int64
	lastRefresh map[string]time.Time
	refreshWant map[string]struct{} // refreshes the sender runs before its next batch

	bgCtx      context.Context // stream, poller, cutter
	bgCancel   context.CancelFunc
	sendCtx    context.Context // sender; outlives bgCtx during Close
	sendCancel context.CancelFunc
	bgWG       sync.WaitGroup
	sendWG     sync.WaitGroup

	unlockSpill func() error // releases the spill directory (Spill only); nil otherwise
}

// Cloud returns a Policy enforcing the policy published to the SDK key's environment
// (Authorization: Bearer token), kept in sync with the control plane. Every call of the
// local API works unchanged. Close flushes usage. It fails with ErrNoPolicy when
// nothing is published to the environment, and with ErrSpillLocked when the Spill
// directory is in use.
//
// Decisions stay local and exact; the SDK keeps the policy current, applies customer
// changes made anywhere, hydrates customers it has not seen from the server, and ships
// usage to the server exactly once:
//
//   - Policy push. A server-sent-events stream (GET /v1/sdk/stream) announces new
//     policy versions and customer changes. The SDK reconnects with exponential backoff
//     and jitter (capped at 10 s) and resumes with Last-Event-ID; while the stream is
//     down it polls GET /v1/sdk/policy with If-None-Match every flush interval. A new
//     version is swapped in atomically: customers, meters and pending usage carry over.
//     When the server no longer holds the changes after the resume point (its
//     retention removed them), it sends a reset: the SDK re-fetches the policy and
//     re-reads every customer it holds (8 at a time), drops those the server no longer
//     has or has created again, lays the server's record over the others (profile,
//     plan, overrides, topups) and re-reads their committed totals and grant draws,
//     then goes on from the reset's cursor. A reset it cannot complete is not skipped:
//     the stream reconnects from its old position and the server sends it again.
//
//   - Usage sync. Every committed call adds to its meter's pending sums in the engine
//     (no allocation, no network), and every draw from a grant to that grant's. Every
//     flush interval, or as soon as WithFlushSize meters have pending usage, the SDK
//     cuts a batch of per-(customer, entitlement, period) deltas and per-(grant,
//     period) grant draws (plus call records in audit mode, see WithAuditMode), each
//     naming the creation time of its customer, and POSTs it gzipped to /v1/sdk/usage
//     as (instance id, sequence). One batch is in flight at a time, in sequence order,
//     retried with exponential backoff and jitter until the server answers 200
//     (committed, or already committed: duplicate). A retry therefore never counts
//     twice and an acknowledged batch is never resent. Records the server committed
//     without a customer (one it does not know, or created again since the usage) are
//     listed in its answer, counted in SyncStats.Unattributed and logged (once per
//     customer per minute): the server keeps them for an operator. A batch the server
//     refuses as invalid (4xx other than 401, 403, 408, 409 and 429) is logged,
//     counted in SyncStats.Dropped and Rejected, and skipped.
//
//   - Events. The engine events worth an alert are forwarded to POST /v1/sdk/events:
//     every policy notification (sent under its name, with the event it matched as
//     Source) and meter-limit, meter-overage, cap-limit, cap-threshold-crossed and
//     meter-governed; not meter-changed, meter-reset or the customer events. A call
//     only appends the event to an in-memory buffer (no I/O, no waiting), and calls
//     build no event a handler does not want, so an allowed call under its limit stays
//     allocation-free; a repeated denial is counted without building its event again.
//     Repeats of a waiting event (same type, notification, customer,
//     entitlement and cap) are sent once with a count; the buffer holds at most
//     WithEventBuffer distinct events (default 10 000) and counts the ones past it in
//     SyncStats.EventsDropped. Events are gathered for WithEventFlushInterval (default
//     the flush interval, at most 100 ms) from the first one, then sent in gzipped
//     batches of up to 1 000 as (instance id, sequence), the sequence separate from
//     usage batches', one batch at a time, retried with backoff under the same
//     sequence until the server answers. A batch refused with a 4xx other than 408 or
//     429 is logged, counted and dropped; a 404 or 405 (a control plane that predates
//     events) turns forwarding off for good, logged once. Close sends what waits within
//     its deadline; whatever is left is counted as dropped, and does not fail Close.
//     WithEventForwarding(false) turns forwarding off.
//
//   - Outages. While the API is unreachable, enforcement goes on from local state. Cut
//     batches queue in memory up to WithBufferSize records; past that, WithOverflow
//     decides: Block (the default) stops cutting batches, so usage keeps accumulating in
//     the engine's per-meter sums — memory is bounded by the number of meters touched,
//     not by the number of calls (audit call records by WithAuditBuffer), and no usage
//     is lost while the process lives; Spill(dir) writes further batches to dir
//     (fsynced) and sends them later in order, including after a restart — a new
//     Cloud on the same dir sends them before anything else, with the identity they
//     were first sent under so the server deduplicates them; Drop discards the oldest
//     queued batch and counts it in SyncStats.Dropped.
//
//   - Customers. CreateCustomer, SetCustomerPlan, DeleteCustomer,
//     CreateCustomerOverride, RemoveCustomerOverride and ApplyCustomerTopup go to the
//     API first and are applied locally only once it confirms; an API error leaves
//     local state unchanged and maps to the SDK's errors (ErrUnknownCustomer,
//     ErrUnknownPlan, ErrUnknownTopup, ...; the *APIError is in the chain). A deleted
//     customer's usage not yet cut into a batch is discarded, whether the delete was
//     made here or pushed by the stream (see DeleteCustomer). The first time any call
//     meets a customer this instance does not hold, the SDK hydrates it from
//     GET /v1/sdk/customers/{id}/state — profile, plan, overrides, purchased topups as
//     grants less their committed draws, and the meters' committed totals — and
//     retries the call once. A customer the server does not know stays
//     ErrUnknownCustomer, and is not asked about again for a second. Concurrent first
//     calls hydrate once.
//
//   - Fleet consistency. In fleet mode Exact (WithFleetMode, the default) hard limits
//     and spend caps are kept exactly across instances with allowance leases the
//     control plane grants (see WithFleetMode); holds take room in those leases and a
//     governor's bucket is shared by the instances holding its meter's lease. Spend
//     caps live on the control plane: AddCustomerCap, ResetCustomerCap and
//     RemoveCustomerCap change them there, and every instance holds them.
//     After each acknowledged batch the SDK refreshes the committed
//     totals, grant draws and cap consumption of the customers in it (at most once per
//     WithRefreshInterval per customer), so usage of other instances counts against
//     limits, caps and grant balances here. In mode Bounded, with N instances serving one customer, each
//     admitting at most r units per second of an entitlement, a flush interval F, a
//     refresh interval R and a delivery latency T (POST and commit, plus the refresh
//     GET), an instance can be blind to another's usage for at most
//     W = F + max(F, R) + T: a unit waits up to F to be cut and T to be committed, and is
//     seen at the next refresh, which for a customer active here follows within max(F, R).
//     Total usage in a period is therefore at most L + (N−1)·r·W over a limit L, and
//     never more than N·L (each instance alone honours L). Tighten it with a shorter
//     flush and refresh interval. With the defaults (F = 1 s, R = 2 s) W is about 3 s.
//
// Durability: usage is durable once the server acknowledged it, or once it is in a
// spill file. Usage still in memory when the process dies without Close is lost; Close
// sends it (and with Spill, writes what it could not send to disk).
//
// The refresh reads at most 256 customers per acknowledged batch (8 at a time), so the
// bound above assumes an instance serves at most about 256·max(F, R)/F active
// customers per flush; beyond that some refreshes come later.
//
// Limitations: a grant's balance (and a voucher's) is drawn locally and corrected from
// the fleet's committed draws on hydration and refresh, so within W instances may
// together draw more than a grant or voucher holds. For grants that reset with add or rollover, the correction
// starts from the topup's value and ignores what the previous period carried over.
// SetCustomer, LoadCustomers and Update act on local state only.
func Cloud(ctx context.Context, token string, opts ...CloudOption) (_ *Policy, err error) {
	if strings.TrimSpace(token) == "" {
		return nil, errors.New("limitr: cloud: empty SDK key")
	}
	cfg := cloudConfig{baseURL: os.Getenv("LIMITR_BASE_URL")}
	for _, o := range opts {
		o(&cfg)
	}
	cfg.defaults()
	if cfg.overflow.kind == overflowSpill {
		if cfg.overflow.dir == "" {
			return nil, errors.New("limitr: cloud: Spill needs a directory")
		}
		if err := os.MkdirAll(cfg.overflow.dir, 0o700); err != nil {
			return nil, fmt.Errorf("limitr: cloud: spill directory: %w", err)
		}
	}
	var unlockSpill func() error
	if cfg.overflow.kind == overflowSpill {
		// Held until Close: two processes sending one directory's files would send the
		// same usage under two identities, which the server cannot deduplicate.
		if unlockSpill, err = lockSpillDir(cfg.overflow.dir); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				_ = unlockSpill()
			}
		}()
	}
	c := &cloud{
		cfg:         cfg,
		base:        strings.TrimRight(cfg.baseURL, "/"),
		token:       token,
		hc:          cfg.httpClient,
		log:         cfg.logger,
		instance:    newInstanceID(),
		nextSeq:     1,
		wakeSend:    make(chan struct{}, 1),
		progress:    make(chan struct{}, 1),
		warned:      map[string]time.Time{},
		flights:     map[string]*flight{},
		negative:    map[string]time.Time{},
		revs:        map[string]int64{},
		lastRefresh: map[string]time.Time{},
		refreshWant: map[string]struct{}{},
		unlockSpill: unlockSpill,
	}
	doc, err := c.fetchInitialPolicy(ctx)
	if err != nil {
		return nil, err
	}
	engOpts := []enforcement.Option{enforcement.WithUsageRecording()}
	c.leases = newLeaser(c)
	engOpts = append(engOpts, enforcement.WithLeases(enforcement.LeaseOptions{Exact: cfg.fleet == Exact, Low: c.leases.low}))
	if cfg.audit {
		engOpts = append(engOpts, enforcement.WithCallAudit(cfg.auditBuffer))
	}
	eng, err := enforcement.New(doc, engOpts...)
	if err != nil {
		return nil, err
	}
	c.eng = eng
	c.policyAt.Store(time.Now().UnixNano())
	c.pending = eng.PendingUsage
	if cfg.overflow.kind == overflowSpill {
		if err := c.loadSpilled(); err != nil {
			return nil, err
		}
	}
	c.bgCtx, c.bgCancel = context.WithCancel(context.Background())
	c.sendCtx, c.sendCancel = context.WithCancel(context.Background())
	c.bgWG.Add(4)
	go c.follow()
	go c.poll()
	go c.cutter()
	go c.leases.renewer()
	c.sendWG.Add(1)
	go c.sender()
	c.startEvents()
	return &Policy{eng: eng, cloud: c}, nil
}

func (cfg *cloudConfig) defaults() {
	if cfg.baseURL == "" {
		cfg.baseURL = DefaultBaseURL
	}
	if cfg.flushInterval <= 0 {
		cfg.flushInterval = DefaultFlushInterval
	}
	if cfg.flushSize <= 0 {
		cfg.flushSize = DefaultFlushSize
	}
	if cfg.bufferSize <= 0 {
		cfg.bufferSize = DefaultBufferSize
	}
	if cfg.auditBuffer <= 0 {
		cfg.auditBuffer = cfg.bufferSize
	}
	if cfg.eventBuffer <= 0 {
		cfg.eventBuffer = DefaultEventBuffer
	}
	if cfg.eventInterval <= 0 {
		cfg.eventInterval = min(cfg.flushInterval, DefaultEventFlushInterval)
	}
	if cfg.refreshInterval == 0 {
		cfg.refreshInterval = DefaultRefreshInterval
	}
	if cfg.httpClient == nil {
		cfg.httpClient = &http.Client{}
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	if cfg.backoffBase <= 0 {
		cfg.backoffBase = min(max(cfg.flushInterval/4, 5*time.Millisecond), 250*time.Millisecond)
	}
	if cfg.backoffCap <= 0 {
		cfg.backoffCap = 10 * time.Second
	}
	if cfg.streamIdle <= 0 {
		cfg.streamIdle = 60 * time.Second
	}
	if cfg.negativeTTL <= 0 {
		cfg.negativeTTL = time.Second
	}
	if cfg.requestLimit <= 0 {
		cfg.requestLimit = 30 * time.Second
	}
	if cfg.hydrateLimit <= 0 {
		cfg.hydrateLimit = 5 * time.Second
	}
	if cfg.leaseHorizon <= 0 {
		cfg.leaseHorizon = DefaultLeaseHorizon
	}
}

// newInstanceID names this Policy's usage stream. It is random per Cloud call, so two
// Policies in one process (or a restarted process) never share sequence numbers.
func newInstanceID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return -1
	}, host)
	if len(host) > 32 {
		host = host[:32]
	}
	if host == "" {
		host = "sdk"
	}
	return host + "-" + hex.EncodeToString(b[:])
}

// VersionNumber is the control plane's number of the enforced policy version (0 in
// local mode).
func (p *Policy) VersionNumber() int {
	if p.cloud == nil {
		return 0
	}
	return int(p.cloud.version.Load())
}

// SyncStats reports the state of cloud sync (zero in local mode).
func (p *Policy) SyncStats() SyncStats {
	if p.cloud == nil {
		return SyncStats{}
	}
	return p.cloud.syncStats()
}

// hydrated reports whether *err is a miss on a customer this instance does not hold
// that cloud mode just fixed by hydrating it from the server: the caller retries once.
// When the control plane could not be asked (an outage), *err becomes ErrUnavailable:
// the customer may well exist.
func (p *Policy) hydrated(ctx context.Context, customer string, err *error) bool {
	if *err == nil || p.cloud == nil || !errors.Is(*err, ErrUnknownCustomer) {
		return false
	}
	if p.cloud.hydrate(ctx, customer) {
		return true
	}
	if cause := p.cloud.unavailable(customer); cause != nil {
		*err = fmt.Errorf("%w: customer %q could not be loaded: %w", ErrUnavailable, customer, cause)
	}
	return false
}
