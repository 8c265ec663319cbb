// Package alerts turns conditions into messages: rules per environment (usage percent,
// spend, grant balance, margin, forecast, caps, policy notifications, billing events)
// are matched against observations (meters as usage is aggregated, engine events the
// SDKs forward, invoice changes), each alert fires once per rule, customer, threshold
// and period (a unique index, so concurrent workers and retries cannot fire it
// twice), and every (alert, channel) pair becomes a delivery: a River job inserted in
// the transaction that fired the alert, retried with backoff and jitter for up to
// 24 hours, then dead-lettered, with every attempt logged.
//
// Firing once per period is the hysteresis: a meter hovering at 80 % fires the 80 %
// alert once, however often it dips and crosses again, and the next period starts
// armed. When one step crosses several thresholds, only the highest is delivered; the
// lower ones are recorded as superseded so they do not fire later in the period.
//
// Channel secrets (Slack tokens and webhook URLs, SMTP passwords, webhook signing
// secrets) are sealed with LIMITR_SECRET_KEY and never returned after creation.
package alerts

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/limitr/limitr/internal/alerts/channels"
	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/policies/pgstore"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
)

// Errors, for errors.Is.
var (
	ErrNotFound = errors.New("not found")
	// ErrConflict: a channel or rule of that name exists in the environment.
	ErrConflict = errors.New("name already in use")
	// ErrEphemeralKeyring: secrets would be sealed with a key that dies with the process.
	ErrEphemeralKeyring = errors.New("LIMITR_SECRET_KEY is not set: refusing to store channel secrets that could not be read after a restart")
	// ErrNotResendable: only a delivered or dead delivery can be sent again.
	ErrNotResendable = errors.New("only a delivered or dead delivery can be resent")
)

// Queue is the River queue deliveries run on.
const Queue = "alerts"

// JobInserter queues River jobs in a transaction (*river.Client[pgx.Tx] is one).
type JobInserter interface {
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// Policies reads an environment's active policy (nil when none is published).
type Policies interface {
	ActivePolicy(ctx context.Context, env store.Environment) (*policies.Policy, error)
}

// activePolicy is the environment's active policy, nil when none is published (the
// policy store's and billing's "no policy" errors included).
func (s *Service) activePolicy(ctx context.Context, env store.Environment) (*policies.Policy, error) {
	p, err := s.policies.ActivePolicy(ctx, env)
	if errors.Is(err, pgstore.ErrNoActivePolicy) || errors.Is(err, billing.ErrNoPolicy) {
		return nil, nil
	}
	return p, err
}

// Config says how to reach the destinations.
type Config struct {
	// SlackAPIURL is Slack's Web API base (default https://slack.com/api/), or a
	// Slack-compatible one for tests and proxies.
	SlackAPIURL string
	// PublicURL is where the dashboard is served; messages link a customer there
	// (empty: no link).
	PublicURL string
	// HTTPClient calls Slack's Web API (an address the operator chose).
	HTTPClient *http.Client
	// AllowPrivateDestinations lets channels send to loopback and private addresses.
	// Off, the URLs and SMTP hosts tenants choose must resolve to public addresses (see
	// channels.ErrPrivateDestination); `limitr dev` turns it on for local receivers.
	AllowPrivateDestinations bool
	// Metrics, when set, counts delivery attempts.
	Metrics *Metrics
	Logger  *slog.Logger
	// MaxAge is how long a delivery is retried before it is dead-lettered (default 24h).
	MaxAge time.Duration
	// StuckAfter is how long an attempt may be under way before RescueStuck takes its
	// worker for dead (default 3m).
	StuckAfter time.Duration
	// RetryBase is the first retry's delay, doubling per attempt up to an hour
	// (default 5s).
	RetryBase time.Duration
}

// Service is the alerts domain.
type Service struct {
	pool      *pgxpool.Pool
	keyring   *secrets.Keyring
	jobs      JobInserter
	policies  Policies
	customers Customers
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	// tenantHTTP and tenantDial reach the destinations tenants choose (webhook URLs,
	// Slack incoming webhooks, SMTP hosts): public addresses only, unless allowed.
	tenantHTTP *http.Client
	tenantDial func(ctx context.Context, network, address string) (net.Conn, error)
}

// New returns the service. jobs may be nil in a process that never fires alerts; it
// then refuses to fire rather than fire without delivering.
func New(pool *pgxpool.Pool, keyring *secrets.Keyring, jobs JobInserter, pols Policies, cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 24 * time.Hour
	}
	s := &Service{pool: pool, keyring: keyring, jobs: jobs, policies: pols, cfg: cfg, log: cfg.Logger, now: time.Now,
		tenantHTTP: cfg.HTTPClient}
	if !cfg.AllowPrivateDestinations {
		s.tenantHTTP = channels.PublicOnlyClient(cfg.HTTPClient.Timeout)
		s.tenantDial = channels.PublicOnlyDialer(10 * time.Second).DialContext
	}
	return s
}

// record writes the audit entry of a change to channels or rules.
func record(ctx context.Context, tx pgx.Tx, env store.Environment, action, resource, id string, before, after any) error {
	envID := env.ID
	return store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: env.TenantID, EnvironmentID: &envID,
		Action: action, Resource: resource, ResourceID: id}, before, after)
}
