package users

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/tenancy"
	"github.com/limitr/limitr/internal/validation"
)

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type fixture struct {
	svc    *Service
	pool   *pgxpool.Pool
	clock  *testClock
	tenant uuid.UUID
	owner  Member
}

const pw = "correct horse battery"

func newFixture(t *testing.T) *fixture {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	ctx := t.Context()
	clock := &testClock{now: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	svc, err := NewService(pool, Config{Hash: HashParams{Memory: 1024, Time: 1, Threads: 1}, Now: clock.Now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := tenancy.NewService(pool).CreateTenant(ctx, tenancy.CreateTenantInput{Slug: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	owner, err := svc.CreateUser(ctx, CreateUserInput{TenantID: b.Tenant.ID, Email: " Owner@Example.com ", Password: pw, Role: RoleOwner})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{svc: svc, pool: pool, clock: clock, tenant: b.Tenant.ID, owner: owner}
}

func (f *fixture) login(t *testing.T, email string) (Session, string) {
	t.Helper()
	s, tok, err := f.svc.Login(t.Context(), LoginInput{Email: email, Password: pw, ClientIP: "10.0.0.1"})
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	return s, tok
}

func TestCreateUserAndLogin(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	if f.owner.Email != "owner@example.com" {
		t.Fatalf("email not normalised: %q", f.owner.Email)
	}
	_, err := f.svc.CreateUser(ctx, CreateUserInput{TenantID: f.tenant, Email: "OWNER@example.com", Password: pw, Role: RoleViewer})
	if !errors.Is(err, ErrEmailTaken) {
		t.Fatalf("same email in another case: %v, want ErrEmailTaken", err)
	}
	_, err = f.svc.CreateUser(ctx, CreateUserInput{TenantID: f.tenant, Email: "nope", Password: "short", Role: "root"})
	var verr *validation.Error
	if !errors.As(err, &verr) || len(verr.Fields) != 3 {
		t.Fatalf("invalid input: %v", err)
	}
	sess, tok := f.login(t, "OWNER@example.com")
	if sess.TenantID != f.tenant || sess.Role != RoleOwner || sess.CSRFToken == "" || tok == "" {
		t.Fatalf("session %+v", sess)
	}
	got, err := f.svc.Authenticate(ctx, tok)
	if err != nil || got.ID != sess.ID || got.User.ID != f.owner.ID || got.CSRFToken != sess.CSRFToken {
		t.Fatalf("authenticate: %+v %v", got, err)
	}
	var stored []byte
	if err := f.pool.QueryRow(ctx, `select token_hash from user_sessions where id = $1`, sess.ID).Scan(&stored); err != nil || string(stored) == tok {
		t.Fatalf("the token must be stored hashed: %v", err)
	}
	if _, _, err := f.svc.Login(ctx, LoginInput{Email: "owner@example.com", Password: "wrong password"}); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, _, err := f.svc.Login(ctx, LoginInput{Email: "nobody@example.com", Password: pw}); !errors.Is(err, ErrInvalidCredentials) {
		t.Fatalf("unknown email: %v", err)
	}
	// The audit log names the operator's changes with no actor.
	var n int
	if err := f.pool.QueryRow(ctx, `select count(*) from audit_log where tenant_id = $1 and action = 'member.add'`, f.tenant).Scan(&n); err != nil || n != 1 {
		t.Fatalf("member.add audit entries: %d %v", n, err)
	}
}

func TestSessionsRotateExpireRevoke(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	first, tok1 := f.login(t, "owner@example.com")
	// Logging in again with the old cookie rotates: a new token, and the old one dies.
	second, tok2, err := f.svc.Login(ctx, LoginInput{Email: "owner@example.com", Password: pw, PreviousToken: tok1})
	if err != nil || tok2 == tok1 || second.ID == first.ID || second.CSRFToken == first.CSRFToken {
		t.Fatalf("rotation: %v", err)
	}
	if _, err := f.svc.Authenticate(ctx, tok1); !errors.Is(err, ErrSessionInvalid) {
		t.Fatalf("old token after login: %v", err)
	}
	// A planted, never-issued token is just ignored at login and never becomes valid.
	_, tok3, err := f.svc.Login(ctx, LoginInput{Email: "owner@example.com", Password: pw, PreviousToken: "planted"})
	if err != nil || tok3 == "planted" {
		t.Fatal(err)
	}
	if _, err := f.svc.Authenticate(ctx, "planted"); !errors.Is(err, ErrSessionInvalid) {
		t.Fatal("planted token authenticated")
	}

	// Idle timeout: used within it, the session lives on; idle past it, it ends.
	cfg := f.svc.Config()
	f.clock.Advance(cfg.IdleTimeout - time.Minute)
	if _, err := f.svc.Authenticate(ctx, tok2); err != nil {
		t.Fatalf("within idle timeout: %v", err)
	}
	f.clock.Advance(cfg.IdleTimeout - time.Minute)
	if _, err := f.svc.Authenticate(ctx, tok2); err != nil {
		t.Fatalf("touched, within idle timeout again: %v", err)
	}
	f.clock.Advance(cfg.IdleTimeout)
	if _, err := f.svc.Authenticate(ctx, tok2); !errors.Is(err, ErrSessionInvalid) {
		t.Fatalf("idle past the timeout: %v", err)
	}

	// Absolute lifetime: even a session used every hour ends.
	_, tok4 := f.login(t, "owner@example.com")
	for elapsed := time.Duration(0); elapsed < cfg.Lifetime-time.Hour; elapsed += time.Hour {
		f.clock.Advance(time.Hour)
		if _, err := f.svc.Authenticate(ctx, tok4); err != nil {
			t.Fatalf("after %v: %v", elapsed+time.Hour, err)
		}
	}
	f.clock.Advance(2 * time.Hour)
	if _, err := f.svc.Authenticate(ctx, tok4); !errors.Is(err, ErrSessionInvalid) {
		t.Fatalf("past the lifetime: %v", err)
	}

	// Logout revokes.
	_, tok5 := f.login(t, "owner@example.com")
	if err := f.svc.Logout(ctx, tok5); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Authenticate(ctx, tok5); !errors.Is(err, ErrSessionInvalid) {
		t.Fatalf("after logout: %v", err)
	}
}

func TestLoginThrottling(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	cfg := f.svc.Config()
	bad := LoginInput{Email: "owner@example.com", Password: "wrong password", ClientIP: "10.0.0.9"}
	for i := 0; i < cfg.MaxFailures; i++ {
		if _, _, err := f.svc.Login(ctx, bad); !errors.Is(err, ErrInvalidCredentials) {
			t.Fatalf("failure %d: %v", i, err)
		}
		f.clock.Advance(time.Second)
	}
	// Now even the right password is refused, for this email from any address.
	_, _, err := f.svc.Login(ctx, LoginInput{Email: "owner@example.com", Password: pw, ClientIP: "10.0.0.7"})
	var terr *ThrottledError
	if !errors.As(err, &terr) || !errors.Is(err, ErrThrottled) || terr.RetryAfter <= 0 || terr.RetryAfter > cfg.FailureWindow {
		t.Fatalf("throttled email: %v", err)
	}
	// And the address is throttled for other emails too.
	if _, _, err := f.svc.Login(ctx, LoginInput{Email: "other@example.com", Password: pw, ClientIP: "10.0.0.9"}); !errors.Is(err, ErrThrottled) {
		t.Fatalf("throttled address: %v", err)
	}
	// Once the window has slid past the failures, the right password works again.
	f.clock.Advance(cfg.FailureWindow)
	if _, _, err := f.svc.Login(ctx, LoginInput{Email: "owner@example.com", Password: pw, ClientIP: "10.0.0.7"}); err != nil {
		t.Fatalf("after the window: %v", err)
	}
}

func TestInvites(t *testing.T) {
	f := newFixture(t)
	ctx := store.WithActor(t.Context(), store.Actor{UserID: &f.owner.ID, RequestID: "test"})
	by := Actor{UserID: f.owner.ID, Role: RoleOwner}
	inv, tok, err := f.svc.CreateInvite(ctx, InviteInput{TenantID: f.tenant, Email: "Ed@Example.com", Role: RoleEditor, By: by})
	if err != nil || inv.Email != "ed@example.com" || !inv.ExpiresAt.Equal(inv.CreatedAt.Add(7*24*time.Hour)) {
		t.Fatalf("invite %+v: %v", inv, err)
	}
	p, err := f.svc.PendingInviteByToken(ctx, tok)
	if err != nil || p.ID != inv.ID || p.UserExists {
		t.Fatalf("pending: %+v %v", p, err)
	}
	// A new user must choose a password.
	if _, err := f.svc.AcceptInvite(ctx, AcceptInviteInput{Token: tok}); !errors.Is(err, validation.ErrInvalid) {
		t.Fatalf("no password: %v", err)
	}
	m, err := f.svc.AcceptInvite(ctx, AcceptInviteInput{Token: tok, Name: "Ed", Password: pw})
	if err != nil || m.Role != RoleEditor || m.Email != "ed@example.com" {
		t.Fatalf("accept: %+v %v", m, err)
	}
	if _, err := f.svc.AcceptInvite(ctx, AcceptInviteInput{Token: tok, Password: pw}); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("second use: %v", err)
	}
	if _, err := f.svc.PendingInviteByToken(ctx, tok); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("used invite still pending: %v", err)
	}
	f.login(t, "ed@example.com")
	if _, _, err := f.svc.CreateInvite(ctx, InviteInput{TenantID: f.tenant, Email: "ed@example.com", Role: RoleViewer, By: by}); !errors.Is(err, ErrAlreadyMember) {
		t.Fatalf("inviting a member: %v", err)
	}

	// An existing user of another tenant joins without a new password.
	other, _ := tenancy.NewService(f.pool).CreateTenant(ctx, tenancy.CreateTenantInput{Slug: "other"})
	_, tok2, err := f.svc.CreateInvite(ctx, InviteInput{TenantID: other.Tenant.ID, Email: "ed@example.com", Role: RoleViewer})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := f.svc.PendingInviteByToken(ctx, tok2); err != nil || !p.UserExists {
		t.Fatalf("existing user: %+v %v", p, err)
	}
	if m, err := f.svc.AcceptInvite(ctx, AcceptInviteInput{Token: tok2}); err != nil || m.ID != m.User.ID || m.Role != RoleViewer {
		t.Fatalf("existing user accepts: %v", err)
	}

	// A withdrawn invite's link stops working; an editor may not withdraw one.
	wd, tokW, _ := f.svc.CreateInvite(ctx, InviteInput{TenantID: f.tenant, Email: "wd@example.com", Role: RoleViewer, By: by})
	if err := f.svc.RevokeInvite(ctx, RevokeInviteInput{TenantID: f.tenant, InviteID: wd.ID, By: Actor{UserID: m.ID, Role: RoleEditor}}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("editor withdraws: %v", err)
	}
	if err := f.svc.RevokeInvite(ctx, RevokeInviteInput{TenantID: f.tenant, InviteID: wd.ID, By: by}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.AcceptInvite(ctx, AcceptInviteInput{Token: tokW, Password: pw}); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("withdrawn: %v", err)
	}
	if err := f.svc.RevokeInvite(ctx, RevokeInviteInput{TenantID: f.tenant, InviteID: wd.ID, By: by}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("withdrawn twice: %v", err)
	}

	// Expiry.
	_, tok3, _ := f.svc.CreateInvite(ctx, InviteInput{TenantID: f.tenant, Email: "late@example.com", Role: RoleViewer, By: by})
	f.clock.Advance(7*24*time.Hour + time.Second)
	if _, err := f.svc.AcceptInvite(ctx, AcceptInviteInput{Token: tok3, Password: pw}); !errors.Is(err, ErrInviteInvalid) {
		t.Fatalf("expired: %v", err)
	}

	// Who may invite whom.
	if _, _, err := f.svc.CreateInvite(ctx, InviteInput{TenantID: f.tenant, Email: "x@example.com", Role: RoleViewer,
		By: Actor{UserID: m.ID, Role: RoleEditor}}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("editor invites: %v", err)
	}
	if _, _, err := f.svc.CreateInvite(ctx, InviteInput{TenantID: f.tenant, Email: "x@example.com", Role: RoleOwner,
		By: Actor{UserID: m.ID, Role: RoleAdmin}}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("admin invites an owner: %v", err)
	}
	var actor *uuid.UUID
	if err := f.pool.QueryRow(ctx, `select actor_user_id from audit_log where action = 'invite.create' order by id limit 1`).Scan(&actor); err != nil ||
		actor == nil || *actor != f.owner.ID {
		t.Fatalf("invite audit actor: %v %v", actor, err)
	}
}

func TestLastOwnerAndRoles(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	owner := Actor{UserID: f.owner.ID, Role: RoleOwner}
	if _, err := f.svc.ChangeRole(ctx, ChangeRoleInput{TenantID: f.tenant, UserID: f.owner.ID, Role: RoleAdmin, By: owner}); !errors.Is(err, ErrLastOwner) {
		t.Fatalf("demote last owner: %v", err)
	}
	if err := f.svc.RemoveMember(ctx, RemoveMemberInput{TenantID: f.tenant, UserID: f.owner.ID, By: owner}); !errors.Is(err, ErrLastOwner) {
		t.Fatalf("remove last owner: %v", err)
	}
	admin, err := f.svc.CreateUser(ctx, CreateUserInput{TenantID: f.tenant, Email: "admin@example.com", Password: pw, Role: RoleAdmin})
	if err != nil {
		t.Fatal(err)
	}
	by := Actor{UserID: admin.ID, Role: RoleAdmin}
	if _, err := f.svc.ChangeRole(ctx, ChangeRoleInput{TenantID: f.tenant, UserID: f.owner.ID, Role: RoleViewer, By: by}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("admin demotes owner: %v", err)
	}
	if _, err := f.svc.ChangeRole(ctx, ChangeRoleInput{TenantID: f.tenant, UserID: admin.ID, Role: RoleOwner, By: by}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("admin makes itself owner: %v", err)
	}
	if _, err := f.svc.ChangeRole(ctx, ChangeRoleInput{TenantID: f.tenant, UserID: admin.ID, Role: RoleOwner, By: owner}); err != nil {
		t.Fatal(err)
	}
	// Two owners: one may step down now.
	if _, err := f.svc.ChangeRole(ctx, ChangeRoleInput{TenantID: f.tenant, UserID: f.owner.ID, Role: RoleViewer, By: owner}); err != nil {
		t.Fatal(err)
	}
	_, tok := f.login(t, "owner@example.com")
	if s, err := f.svc.Authenticate(ctx, tok); err != nil || s.Role != RoleViewer {
		t.Fatalf("role after change: %+v %v", s, err)
	}
	// Removing a member ends their sessions in the tenant.
	if err := f.svc.RemoveMember(ctx, RemoveMemberInput{TenantID: f.tenant, UserID: f.owner.ID, By: Actor{UserID: admin.ID, Role: RoleOwner}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.Authenticate(ctx, tok); !errors.Is(err, ErrSessionInvalid) {
		t.Fatalf("removed member's session: %v", err)
	}
	if _, _, err := f.svc.Login(ctx, LoginInput{Email: "owner@example.com", Password: pw}); !errors.Is(err, ErrNoMembership) {
		t.Fatalf("login without membership: %v", err)
	}
	ms, err := f.svc.ListMembers(ctx, f.tenant)
	if err != nil || len(ms) != 1 || ms[0].Role != RoleOwner {
		t.Fatalf("members: %+v %v", ms, err)
	}
}
