package users

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Session is a logged-in browser: its user, the tenant it acts in with the user's role
// there, and the synchronizer token its forms must carry.
type Session struct {
	ID       uuid.UUID
	User     User
	TenantID uuid.UUID
	Role     Role
	// Environment is the environment the dashboard shows; "" means the tenant's first.
	Environment string
	// CSRFToken must come back with every state-changing request of this session.
	CSRFToken  string
	CreatedAt  time.Time
	LastSeenAt time.Time
	ExpiresAt  time.Time
}

// touchEvery bounds how often Authenticate writes last_seen_at: idle timeouts are hours,
// so a minute's precision costs nothing and spares a write per page view.
const touchEvery = time.Minute

// Login checks an email and password and starts a new session, returning it with its
// token (for the cookie; only its hash is stored). The session the browser had before,
// if any, is revoked: a token planted before login never becomes an authenticated one.
//
// Too many failures for the email or the client address within the window refuse
// the attempt with a *ThrottledError before the password is even checked.
func (s *Service) Login(ctx context.Context, in LoginInput) (Session, string, error) {
	if err := in.Validate(); err != nil {
		return Session{}, "", err
	}
	email := NormalizeEmail(in.Email)
	subjects := []string{"email:" + email}
	if in.ClientIP != "" {
		subjects = append(subjects, "ip:"+in.ClientIP)
	}
	if err := s.checkThrottle(ctx, subjects); err != nil {
		return Session{}, "", err
	}
	u, hash, err := s.userByEmail(ctx, email)
	if errors.Is(err, ErrNotFound) {
		_, _ = VerifyPassword(in.Password, s.dummyHash)
		return Session{}, "", s.fail(ctx, subjects)
	} else if err != nil {
		return Session{}, "", fmt.Errorf("users: login: %w", err)
	}
	if ok, err := VerifyPassword(in.Password, hash); err != nil {
		return Session{}, "", fmt.Errorf("users: login: %w", err)
	} else if !ok {
		return Session{}, "", s.fail(ctx, subjects)
	}
	var sess Session
	var token string
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if in.PreviousToken != "" {
			if _, err := tx.Exec(ctx, `update user_sessions set revoked_at = $2 where token_hash = $1 and revoked_at is null`,
				hashToken(in.PreviousToken), s.now()); err != nil {
				return err
			}
		}
		if sess, token, err = s.startSession(ctx, tx, u, in); err != nil {
			return err
		}
		// A success forgives the email's failures, not the address's: an address
		// guessing at many accounts stays throttled.
		_, err = tx.Exec(ctx, `delete from login_failures where subject = $1`, subjects[0])
		return err
	})
	if err != nil {
		return Session{}, "", fmt.Errorf("users: login: %w", err)
	}
	return sess, token, nil
}

func (s *Service) startSession(ctx context.Context, tx pgx.Tx, u User, in LoginInput) (Session, string, error) {
	sess := Session{ID: uuid.New(), User: u}
	// The tenant the user joined first; a tenant switcher can move the session later.
	err := tx.QueryRow(ctx, `select tenant_id, role from memberships where user_id = $1
		order by created_at, tenant_id limit 1`, u.ID).Scan(&sess.TenantID, &sess.Role)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, "", ErrNoMembership
	} else if err != nil {
		return Session{}, "", err
	}
	token, hash, err := newToken()
	if err != nil {
		return Session{}, "", err
	}
	if sess.CSRFToken, _, err = newToken(); err != nil {
		return Session{}, "", err
	}
	now := s.now()
	sess.CreatedAt, sess.LastSeenAt, sess.ExpiresAt = now, now, now.Add(s.cfg.Lifetime)
	_, err = tx.Exec(ctx, `insert into user_sessions (id, token_hash, user_id, tenant_id, csrf_token,
		created_at, last_seen_at, expires_at, client_ip, user_agent) values ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9)`,
		sess.ID, hash, u.ID, sess.TenantID, sess.CSRFToken, now, sess.ExpiresAt, in.ClientIP, truncate(in.UserAgent, 512))
	return sess, token, err
}

// Authenticate returns the live session of token. An unknown, revoked, idle or expired
// session, or one whose user is no longer a member of its tenant, is ErrSessionInvalid.
func (s *Service) Authenticate(ctx context.Context, token string) (Session, error) {
	if token == "" || len(token) > 128 {
		return Session{}, ErrSessionInvalid
	}
	var sess Session
	var env *string
	var revoked *time.Time
	err := s.pool.QueryRow(ctx, `select s.id, s.tenant_id, s.environment, s.csrf_token, s.created_at, s.last_seen_at,
			s.expires_at, s.revoked_at, u.id, u.email, u.name, u.created_at, m.role
		from user_sessions s
		join users u on u.id = s.user_id
		join memberships m on m.tenant_id = s.tenant_id and m.user_id = s.user_id
		where s.token_hash = $1`, hashToken(token)).Scan(&sess.ID, &sess.TenantID, &env, &sess.CSRFToken, &sess.CreatedAt,
		&sess.LastSeenAt, &sess.ExpiresAt, &revoked, &sess.User.ID, &sess.User.Email, &sess.User.Name, &sess.User.CreatedAt, &sess.Role)
	if errors.Is(err, pgx.ErrNoRows) {
		return Session{}, ErrSessionInvalid
	} else if err != nil {
		return Session{}, fmt.Errorf("users: authenticate: %w", err)
	}
	now := s.now()
	if revoked != nil || !now.Before(sess.ExpiresAt) || !now.Before(sess.LastSeenAt.Add(s.cfg.IdleTimeout)) {
		return Session{}, ErrSessionInvalid
	}
	if env != nil {
		sess.Environment = *env
	}
	if now.Sub(sess.LastSeenAt) >= touchEvery {
		if _, err := s.pool.Exec(ctx, `update user_sessions set last_seen_at = $2 where id = $1`, sess.ID, now); err != nil {
			return Session{}, fmt.Errorf("users: authenticate: %w", err)
		}
		sess.LastSeenAt = now
	}
	return sess, nil
}

// Logout revokes the session of token; an unknown or already revoked one is fine.
func (s *Service) Logout(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	if _, err := s.pool.Exec(ctx, `update user_sessions set revoked_at = $2 where token_hash = $1 and revoked_at is null`,
		hashToken(token), s.now()); err != nil {
		return fmt.Errorf("users: logout: %w", err)
	}
	return nil
}

// SetEnvironment records which environment a session's dashboard shows. The caller
// checks that the environment belongs to the session's tenant.
func (s *Service) SetEnvironment(ctx context.Context, sessionID uuid.UUID, environment string) error {
	if _, err := s.pool.Exec(ctx, `update user_sessions set environment = $2 where id = $1 and revoked_at is null`,
		sessionID, environment); err != nil {
		return fmt.Errorf("users: set environment: %w", err)
	}
	return nil
}

// checkThrottle is a *ThrottledError when any subject has MaxFailures failures within
// the window; RetryAfter is when the oldest of them leaves it.
func (s *Service) checkThrottle(ctx context.Context, subjects []string) error {
	now := s.now()
	since := now.Add(-s.cfg.FailureWindow)
	for _, subj := range subjects {
		var n int
		var oldest *time.Time
		if err := s.pool.QueryRow(ctx, `select count(*), min(at) from (select at from login_failures
			where subject = $1 and at > $2 order by at desc limit $3) recent`, subj, since, s.cfg.MaxFailures).Scan(&n, &oldest); err != nil {
			return fmt.Errorf("users: login throttle: %w", err)
		}
		if n >= s.cfg.MaxFailures && oldest != nil {
			return &ThrottledError{RetryAfter: oldest.Add(s.cfg.FailureWindow).Sub(now)}
		}
	}
	return nil
}

// fail records a failed login against every subject and returns ErrInvalidCredentials.
// Failures older than the window are pruned as new ones come, so the table stays small.
func (s *Service) fail(ctx context.Context, subjects []string) error {
	now := s.now()
	for _, subj := range subjects {
		if _, err := s.pool.Exec(ctx, `with pruned as (delete from login_failures where subject = $1 and at <= $3)
			insert into login_failures (subject, at) values ($1, $2)`, subj, now, now.Add(-s.cfg.FailureWindow)); err != nil {
			return fmt.Errorf("users: login: record failure: %w", err)
		}
	}
	return ErrInvalidCredentials
}

func (s *Service) userByEmail(ctx context.Context, email string) (User, string, error) {
	var u User
	var hash string
	err := s.pool.QueryRow(ctx, `select id, email, name, created_at, password_hash from users where email = $1`, email).
		Scan(&u.ID, &u.Email, &u.Name, &u.CreatedAt, &hash)
	if errors.Is(err, pgx.ErrNoRows) {
		return User{}, "", ErrNotFound
	}
	return u, hash, err
}

func truncate(s string, n int) string {
	if len(s) > n {
		// Cut on a byte count, then drop a rune split in half: Postgres text is UTF-8.
		return strings.ToValidUTF8(s[:n], "")
	}
	return s
}
