// Package users is the dashboard's people domain: users with argon2id passwords, their
// role in each tenant, sessions kept in Postgres, invites by link and login throttling.
// Its Service takes validated inputs, runs each change in one transaction with its
// audit record, and keeps the rules that protect a tenant, such as never losing its
// last owner. The web dashboard (internal/web) and the limitr CLI both go through it.
package users

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/store"
)

// User is a person who can log in to the dashboard.
type User struct {
	ID        uuid.UUID `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

// Member is a user with their role in one tenant.
type Member struct {
	User
	Role  Role      `json:"role"`
	Since time.Time `json:"since"`
}

// Config holds the service's tunables; zero values take the defaults.
type Config struct {
	// IdleTimeout ends a session not used for this long (default 8h).
	IdleTimeout time.Duration
	// Lifetime ends a session this long after login, used or not (default 7 days).
	Lifetime time.Duration
	// InviteTTL is how long an invite link works (default 7 days).
	InviteTTL time.Duration
	// MaxFailures failed logins per email, and per client address, within FailureWindow
	// refuse further attempts until the window slides (defaults 10 and 15m).
	MaxFailures   int
	FailureWindow time.Duration
	// Hash are the argon2id costs of new password hashes (default DefaultHashParams).
	Hash HashParams
	// Now is the clock (default time.Now).
	Now func() time.Time
}

func (c *Config) defaults() {
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 8 * time.Hour
	}
	if c.Lifetime <= 0 {
		c.Lifetime = 7 * 24 * time.Hour
	}
	if c.InviteTTL <= 0 {
		c.InviteTTL = 7 * 24 * time.Hour
	}
	if c.MaxFailures <= 0 {
		c.MaxFailures = 10
	}
	if c.FailureWindow <= 0 {
		c.FailureWindow = 15 * time.Minute
	}
	if c.Hash == (HashParams{}) {
		c.Hash = DefaultHashParams
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Service runs user operations against Postgres.
type Service struct {
	cfg  Config
	pool *pgxpool.Pool
	// dummyHash is verified against when the email is unknown, so an unknown email
	// takes as long to refuse as a wrong password and does not reveal who has an account.
	dummyHash string
}

// NewService returns a service on pool.
func NewService(pool *pgxpool.Pool, cfg Config) (*Service, error) {
	cfg.defaults()
	dummy, err := HashPassword("not a real password", cfg.Hash)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, pool: pool, dummyHash: dummy}, nil
}

// Config returns the service's configuration with defaults applied.
func (s *Service) Config() Config { return s.cfg }

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

// CreateUser creates a user with a password and makes them a member of a tenant with a
// role: how an operator makes a tenant's first owner. An email that is taken is
// ErrEmailTaken (invite the existing user instead).
func (s *Service) CreateUser(ctx context.Context, in CreateUserInput) (Member, error) {
	if err := in.Validate(); err != nil {
		return Member{}, err
	}
	hash, err := HashPassword(in.Password, s.cfg.Hash)
	if err != nil {
		return Member{}, err
	}
	var m Member
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		u, err := s.insertUser(ctx, tx, in.Email, in.Name, hash)
		if err != nil {
			return err
		}
		m, err = s.addMember(ctx, tx, in.TenantID, u, in.Role)
		return err
	})
	if err != nil {
		return Member{}, fmt.Errorf("users: create user: %w", err)
	}
	return m, nil
}

func (s *Service) insertUser(ctx context.Context, tx pgx.Tx, email, name, hash string) (User, error) {
	u := User{ID: uuid.New(), Email: NormalizeEmail(email), Name: name, CreatedAt: s.now()}
	_, err := tx.Exec(ctx, `insert into users (id, email, name, password_hash, created_at) values ($1, $2, $3, $4, $5)`,
		u.ID, u.Email, u.Name, hash, u.CreatedAt)
	if isUniqueViolation(err) {
		return User{}, ErrEmailTaken
	}
	return u, err
}

// addMember makes u a member of tenantID with role, audited.
func (s *Service) addMember(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, u User, role Role) (Member, error) {
	m := Member{User: u, Role: role, Since: s.now()}
	_, err := tx.Exec(ctx, `insert into memberships (tenant_id, user_id, role, created_at) values ($1, $2, $3, $4)`,
		tenantID, u.ID, role, m.Since)
	switch {
	case isUniqueViolation(err):
		return Member{}, ErrAlreadyMember
	case isForeignKeyViolation(err):
		return Member{}, fmt.Errorf("tenant: %w", ErrNotFound)
	case err != nil:
		return Member{}, err
	}
	return m, audit(ctx, tx, tenantID, "member.add", "membership", u.ID.String(), nil, m)
}

// lockTenant serialises membership changes of one tenant for the transaction, so two
// owners demoting each other at once cannot both see "another owner is left". FOR NO
// KEY UPDATE does not block inserts that reference the tenant.
func lockTenant(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID) error {
	var id uuid.UUID
	err := tx.QueryRow(ctx, `select id from tenants where id = $1 for no key update`, tenantID).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("tenant: %w", ErrNotFound)
	}
	return err
}

// audit records a change in the same transaction, by the actor ctx carries
// (store.WithActor).
func audit(ctx context.Context, tx pgx.Tx, tenantID uuid.UUID, action, resource, id string, before, after any) error {
	return store.RecordAudit(ctx, tx, store.AuditEntry{TenantID: tenantID, Action: action, Resource: resource, ResourceID: id}, before, after)
}

// newToken returns a random secret for a cookie or a link, and the SHA-256 hash that
// is all the database keeps of it.
func newToken() (token string, hash []byte, err error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("users: token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, hashToken(token), nil
}

func hashToken(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

func isForeignKeyViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23503"
}
