// Package stripesync mirrors an environment's billing into Stripe and takes payment
// status back: the connection (secrets sealed at rest), River jobs that push customers,
// plans, finalized invoices, their lifecycle and credit notes, the signed webhooks, and
// a reconciliation that reports drift. Stripe is a mirror, never the source of truth:
// every job pushes what Postgres already decided, with an idempotency key derived from
// our ids, and stores the id Stripe returns in the transaction that records the step.
package stripesync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/limitr/limitr/internal/billing"
	"github.com/limitr/limitr/internal/billing/stripe"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

// Errors, for errors.Is.
var (
	// ErrNotConnected: the environment has no Stripe connection.
	ErrNotConnected = errors.New("stripe is not connected for this environment")
	// ErrEphemeralKeyring: secrets would be sealed with a key that dies with the process.
	ErrEphemeralKeyring = errors.New("LIMITR_SECRET_KEY is not set: refusing to store Stripe secrets that could not be read after a restart")
)

// JobInserter queues River jobs in a transaction (*river.Client[pgx.Tx] is one).
type JobInserter interface {
	InsertManyTx(ctx context.Context, tx pgx.Tx, params []river.InsertManyParams) ([]*rivertype.JobInsertResult, error)
}

// Config says how to reach Stripe.
type Config struct {
	// APIBase is Stripe's API URL, or a Stripe-compatible one (stripe-mock in tests).
	APIBase    string
	HTTPClient *http.Client
	Logger     *slog.Logger
}

// Service is the Stripe mirror.
type Service struct {
	pool    *pgxpool.Pool
	keyring *secrets.Keyring
	jobs    JobInserter
	billing *billing.Service
	cfg     Config
	log     *slog.Logger
	now     func() time.Time
}

// New returns the mirror. jobs may be nil in a process that only serves webhooks and
// connections; it then queues nothing.
func New(pool *pgxpool.Pool, keyring *secrets.Keyring, jobs JobInserter, bill *billing.Service, cfg Config) *Service {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Service{pool: pool, keyring: keyring, jobs: jobs, billing: bill, cfg: cfg, log: log, now: time.Now}
}

// APIBase is the Stripe URL the mirror calls ("" for Stripe's own).
func (s *Service) APIBase() string { return s.cfg.APIBase }

// ConnectInput connects an environment to a Stripe account.
type ConnectInput struct {
	SecretKey     string `json:"secret_key"`
	WebhookSecret string `json:"webhook_secret"`
}

// Validate checks the shape of both secrets.
func (in ConnectInput) Validate() error {
	var errs validation.Errors
	switch {
	case in.SecretKey == "":
		errs.Add("secret_key", "is required: a Stripe secret or restricted key (sk_… or rk_…)")
	case !strings.HasPrefix(in.SecretKey, "sk_") && !strings.HasPrefix(in.SecretKey, "rk_"):
		errs.Add("secret_key", "must be a Stripe secret or restricted key (sk_… or rk_…)")
	case len(in.SecretKey) > 255:
		errs.Add("secret_key", "is too long")
	}
	switch {
	case in.WebhookSecret == "":
		errs.Add("webhook_secret", "is required: the endpoint's signing secret (whsec_…)")
	case !strings.HasPrefix(in.WebhookSecret, "whsec_"):
		errs.Add("webhook_secret", "must be a webhook signing secret (whsec_…)")
	case len(in.WebhookSecret) > 255:
		errs.Add("webhook_secret", "is too long")
	}
	return errs.Err("invalid stripe connection")
}

// Connection is what the API shows of a connection: never the secrets.
type Connection struct {
	Connected     bool            `json:"connected"`
	KeyHint       string          `json:"key_hint,omitempty"`
	Livemode      bool            `json:"livemode"`
	WebhookURL    string          `json:"webhook_path,omitempty"`
	UpdatedAt     *time.Time      `json:"updated_at,omitempty"`
	LastReconcile *Reconciliation `json:"last_reconciliation,omitempty"`
}

// Reconciliation is the result of comparing our finalized invoices with Stripe's.
type Reconciliation struct {
	RanAt   time.Time `json:"ran_at"`
	Checked int       `json:"checked"`
	Drift   []Drift   `json:"drift"`
}

// Drift is one invoice on which Stripe and we disagree.
type Drift struct {
	Invoice       string `json:"invoice"`
	StripeInvoice string `json:"stripe_invoice,omitempty"`
	Problem       string `json:"problem"`
}

func aad(env store.Environment, column string) []byte {
	return secrets.AAD(env.TenantID.String(), env.ID.String(), "stripe_connections", column)
}

// Connect stores (or replaces) an environment's Stripe secrets, sealed.
func (s *Service) Connect(ctx context.Context, env store.Environment, in ConnectInput) (Connection, error) {
	if err := in.Validate(); err != nil {
		return Connection{}, err
	}
	if s.keyring == nil || s.keyring.Ephemeral() {
		return Connection{}, ErrEphemeralKeyring
	}
	key, err := s.keyring.SealString([]byte(in.SecretKey), aad(env, "secret_key"))
	if err != nil {
		return Connection{}, err
	}
	hook, err := s.keyring.SealString([]byte(in.WebhookSecret), aad(env, "webhook_secret"))
	if err != nil {
		return Connection{}, err
	}
	hint := in.SecretKey[max(0, len(in.SecretKey)-4):]
	live := strings.Contains(in.SecretKey, "_live_")
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `insert into stripe_connections (tenant_id, environment_id, secret_key_sealed, webhook_secret_sealed, key_hint, livemode)
			values ($1, $2, $3, $4, $5, $6)
			on conflict (tenant_id, environment_id) do update set secret_key_sealed = excluded.secret_key_sealed,
			  webhook_secret_sealed = excluded.webhook_secret_sealed, key_hint = excluded.key_hint, livemode = excluded.livemode, updated_at = now()`,
			env.TenantID, env.ID, key, hook, hint, live); err != nil {
			return fmt.Errorf("stripesync: connect: %w", err)
		}
		envID := env.ID
		return store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: env.TenantID, EnvironmentID: &envID, Action: "stripe.connected",
			Resource: "stripe_connection", ResourceID: env.Name}, nil, map[string]any{"key_hint": hint, "livemode": live})
	})
	if err != nil {
		return Connection{}, err
	}
	return s.Connection(ctx, env)
}

// Disconnect removes an environment's Stripe secrets; nothing more is pushed.
func (s *Service) Disconnect(ctx context.Context, env store.Environment) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `delete from stripe_connections where tenant_id = $1 and environment_id = $2`, env.TenantID, env.ID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return ErrNotConnected
		}
		envID := env.ID
		return store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: env.TenantID, EnvironmentID: &envID, Action: "stripe.disconnected",
			Resource: "stripe_connection", ResourceID: env.Name}, nil, nil)
	})
}

// Connection reports an environment's connection and its last reconciliation.
func (s *Service) Connection(ctx context.Context, env store.Environment) (Connection, error) {
	out := Connection{WebhookURL: "/v1/webhooks/stripe/" + env.ID.String()}
	var updated time.Time
	err := s.pool.QueryRow(ctx, `select key_hint, livemode, updated_at from stripe_connections where tenant_id = $1 and environment_id = $2`,
		env.TenantID, env.ID).Scan(&out.KeyHint, &out.Livemode, &updated)
	if errors.Is(err, pgx.ErrNoRows) {
		return out, nil
	}
	if err != nil {
		return Connection{}, fmt.Errorf("stripesync: connection: %w", err)
	}
	out.Connected, out.UpdatedAt = true, &updated
	var r Reconciliation
	err = s.pool.QueryRow(ctx, `select ran_at, checked, drift from stripe_reconciliations where tenant_id = $1 and environment_id = $2
		order by id desc limit 1`, env.TenantID, env.ID).Scan(&r.RanAt, &r.Checked, &r.Drift)
	if err == nil {
		out.LastReconcile = &r
	} else if !errors.Is(err, pgx.ErrNoRows) {
		return Connection{}, fmt.Errorf("stripesync: reconciliation: %w", err)
	}
	return out, nil
}

// secretsOf opens an environment's Stripe secrets.
func (s *Service) secretsOf(ctx context.Context, db store.DBTX, env store.Environment) (key, webhook string, err error) {
	var sealedKey, sealedHook string
	err = db.QueryRow(ctx, `select secret_key_sealed, webhook_secret_sealed from stripe_connections where tenant_id = $1 and environment_id = $2`,
		env.TenantID, env.ID).Scan(&sealedKey, &sealedHook)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", "", ErrNotConnected
	}
	if err != nil {
		return "", "", err
	}
	if s.keyring == nil {
		return "", "", ErrEphemeralKeyring
	}
	k, err := s.keyring.OpenString(sealedKey, aad(env, "secret_key"))
	if err != nil {
		return "", "", fmt.Errorf("stripesync: open the secret key: %w", err)
	}
	h, err := s.keyring.OpenString(sealedHook, aad(env, "webhook_secret"))
	if err != nil {
		return "", "", fmt.Errorf("stripesync: open the webhook secret: %w", err)
	}
	return string(k), string(h), nil
}

// client builds a Stripe client for an environment.
func (s *Service) client(ctx context.Context, env store.Environment) (*stripe.Client, error) {
	key, _, err := s.secretsOf(ctx, s.pool, env)
	if err != nil {
		return nil, err
	}
	opts := []stripe.Option{stripe.WithLogger(s.log)}
	if s.cfg.APIBase != "" {
		opts = append(opts, stripe.WithAPIBase(s.cfg.APIBase))
	}
	if s.cfg.HTTPClient != nil {
		opts = append(opts, stripe.WithHTTPClient(s.cfg.HTTPClient))
	}
	return stripe.New(key, opts...)
}

// connected reports whether an environment has a Stripe connection.
func connected(ctx context.Context, db store.DBTX, env store.Environment) (bool, error) {
	var ok bool
	err := db.QueryRow(ctx, `select exists (select 1 from stripe_connections where tenant_id = $1 and environment_id = $2)`,
		env.TenantID, env.ID).Scan(&ok)
	return ok, err
}

// Reseal re-seals every connection's secrets under the newest key of the keyring, so
// an old key can be retired. It returns how many it re-sealed.
func (s *Service) Reseal(ctx context.Context) (int, error) {
	if s.keyring == nil || s.keyring.Ephemeral() {
		return 0, nil
	}
	rows, err := s.pool.Query(ctx, `select tenant_id, environment_id, secret_key_sealed, webhook_secret_sealed from stripe_connections`)
	if err != nil {
		return 0, err
	}
	type conn struct {
		env       store.Environment
		key, hook string
	}
	conns, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (conn, error) {
		var c conn
		return c, r.Scan(&c.env.TenantID, &c.env.ID, &c.key, &c.hook)
	})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, c := range conns {
		if !s.keyring.NeedsRotationString(c.key) && !s.keyring.NeedsRotationString(c.hook) {
			continue
		}
		key, err := s.reseal(c.key, aad(c.env, "secret_key"))
		if err != nil {
			return n, err
		}
		hook, err := s.reseal(c.hook, aad(c.env, "webhook_secret"))
		if err != nil {
			return n, err
		}
		if _, err := s.pool.Exec(ctx, `update stripe_connections set secret_key_sealed = $3, webhook_secret_sealed = $4
			where tenant_id = $1 and environment_id = $2 and secret_key_sealed = $5 and webhook_secret_sealed = $6`,
			c.env.TenantID, c.env.ID, key, hook, c.key, c.hook); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

func (s *Service) reseal(sealed string, ad []byte) (string, error) {
	plain, err := s.keyring.OpenString(sealed, ad)
	if err != nil {
		return "", fmt.Errorf("stripesync: reseal: %w", err)
	}
	return s.keyring.SealString(plain, ad)
}

// environment loads an environment by ids.
func (s *Service) environment(ctx context.Context, tenantID, envID uuid.UUID) (store.Environment, error) {
	return store.EnvironmentByID(ctx, s.pool, tenantID, envID)
}
