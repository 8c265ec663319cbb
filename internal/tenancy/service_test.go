package tenancy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
)

func newService(t *testing.T) (*Service, *pgxpool.Pool) {
	t.Helper()
	_, pool := pgtest.NewMigrated(t)
	return NewService(pool), pool
}

func TestInputsValidate(t *testing.T) {
	tid := uuid.New()
	for _, tc := range []struct {
		name  string
		input interface{ Validate() error }
		want  []string // "path: message" prefixes, in order; none means valid
	}{
		{"tenant ok", CreateTenantInput{Slug: "acme", Name: "Acme Inc."}, nil},
		{"tenant without a name", CreateTenantInput{Slug: "acme"}, nil},
		{"tenant slug", CreateTenantInput{Slug: "Acme!"}, []string{"slug: use 1-63 lowercase"}},
		{"tenant slug and name", CreateTenantInput{Slug: "", Name: "a\x00b"}, []string{"slug: use", "name: must not contain control characters"}},
		{"tenant long name", CreateTenantInput{Slug: "a", Name: strings.Repeat("x", 201)}, []string{"name: is longer than 200 bytes"}},
		{"tenant bad utf-8", CreateTenantInput{Slug: "a", Name: "\xff"}, []string{"name: is not valid UTF-8"}},
		{"environment ok", CreateEnvironmentInput{TenantID: tid, Name: "eu-west"}, nil},
		{"environment name", CreateEnvironmentInput{TenantID: tid, Name: "EU"}, []string{"name: use 1-63"}},
		{"environment tenant", CreateEnvironmentInput{Name: "eu"}, []string{"tenant_id: is required"}},
		{"admin key ok", CreateKeyInput{TenantID: tid, Kind: KindAdmin, Name: "ops"}, nil},
		{"sdk key ok", CreateKeyInput{TenantID: tid, Kind: KindSDK, Environment: "production"}, nil},
		{"admin key with environment", CreateKeyInput{TenantID: tid, Kind: KindAdmin, Environment: "production"}, []string{"environment: admin keys are not bound"}},
		{"sdk key without environment", CreateKeyInput{TenantID: tid, Kind: KindSDK}, []string{"environment: is required for an sdk key"}},
		{"key kind and name", CreateKeyInput{TenantID: tid, Kind: "root", Name: "\n"}, []string{`kind: must be "admin" or "sdk"`, "name: must not contain"}},
		{"revoke ok", RevokeKeyInput{TenantID: tid, KeyID: uuid.New()}, nil},
		{"revoke nothing", RevokeKeyInput{}, []string{"tenant_id: is required", "id: is required"}},
		{"audit ok", ListAuditInput{TenantID: tid, Limit: 200}, nil},
		{"audit bounds", ListAuditInput{TenantID: tid, Before: -1, Limit: 201}, []string{"cursor: is not a cursor", "limit: must be a whole number from 1 to 200"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.input.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("invalid: %v", err)
				}
				return
			}
			var verr *validation.Error
			if !errors.As(err, &verr) || !errors.Is(err, validation.ErrInvalid) {
				t.Fatalf("error %v, want a *validation.Error", err)
			}
			if len(verr.Fields) != len(tc.want) {
				t.Fatalf("fields %+v, want %q", verr.Fields, tc.want)
			}
			for i, w := range tc.want {
				if got := verr.Fields[i].Path + ": " + verr.Fields[i].Message; !strings.HasPrefix(got, w) {
					t.Errorf("field %d: %q, want %q...", i, got, w)
				}
			}
		})
	}
}

// auditEntries lists a tenant's audit log, oldest first.
func auditEntries(t *testing.T, s *Service, tenantID uuid.UUID) []AuditEntry {
	t.Helper()
	page, err := s.ListAudit(t.Context(), ListAuditInput{TenantID: tenantID, Limit: MaxAuditPage})
	if err != nil {
		t.Fatal(err)
	}
	out := page.Entries
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

func TestCreateTenant(t *testing.T) {
	s, _ := newService(t)
	ctx := t.Context()
	out, err := s.CreateTenant(store.WithActor(ctx, store.Actor{RequestID: "req-1"}), CreateTenantInput{Slug: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if out.Tenant.Name != "acme" || len(out.Environments) != 2 || out.AdminKey.Kind != KindAdmin || !strings.HasPrefix(out.Secret, "lk_admin_") {
		t.Fatalf("%+v", out)
	}
	if got, err := s.TenantBySlug(ctx, "acme"); err != nil || got.ID != out.Tenant.ID {
		t.Fatalf("TenantBySlug: %+v %v", got, err)
	}
	entries := auditEntries(t, s, out.Tenant.ID)
	if len(entries) != 1 || entries[0].Action != "tenant.bootstrap" || entries[0].ActorKeyID != nil || entries[0].RequestID != "req-1" ||
		strings.Contains(string(entries[0].After), out.Secret) {
		t.Fatalf("audit: %+v", entries)
	}

	_, err = s.CreateTenant(ctx, CreateTenantInput{Slug: "acme"})
	var rerr *ResourceError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &rerr) || rerr.Resource != ResourceTenant || rerr.Name != "acme" {
		t.Fatalf("second tenant acme: %v", err)
	}
	if _, err := s.CreateTenant(ctx, CreateTenantInput{Slug: "Nope!"}); !errors.Is(err, validation.ErrInvalid) {
		t.Fatalf("bad slug: %v", err)
	}
	if _, err := s.TenantBySlug(ctx, "nobody"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown slug: %v", err)
	}
	if _, err := s.Tenant(ctx, uuid.New()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown tenant: %v", err)
	}
}

func TestEnvironmentsAndKeys(t *testing.T) {
	s, _ := newService(t)
	ctx := t.Context()
	acme, err := s.CreateTenant(ctx, CreateTenantInput{Slug: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	tid, admin := acme.Tenant.ID, acme.AdminKey.ID
	as := store.WithActor(ctx, store.Actor{KeyID: &admin, RequestID: "req-2"})

	env, err := s.CreateEnvironment(as, CreateEnvironmentInput{TenantID: tid, Name: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.CreateEnvironment(as, CreateEnvironmentInput{TenantID: tid, Name: "eu"})
	var rerr *ResourceError
	if !errors.Is(err, ErrConflict) || !errors.As(err, &rerr) || rerr.Resource != ResourceEnvironment || rerr.Name != "eu" {
		t.Fatalf("second eu: %v", err)
	}
	envs, err := s.ListEnvironments(ctx, tid)
	if err != nil || len(envs) != 3 {
		t.Fatalf("environments: %+v %v", envs, err)
	}

	k, err := s.CreateKey(as, CreateKeyInput{TenantID: tid, Kind: KindSDK, Environment: "eu", Name: "app"})
	if err != nil {
		t.Fatal(err)
	}
	if k.EnvironmentID == nil || *k.EnvironmentID != env.ID || k.Environment != "eu" || *k.CreatedBy != admin || !strings.HasPrefix(k.Secret, "lk_sdk_") {
		t.Fatalf("sdk key %+v", k)
	}
	if got, err := store.Authenticate(ctx, s.pool, k.Secret); err != nil || got.ID != k.ID {
		t.Fatalf("the new key does not authenticate: %v", err)
	}
	_, err = s.CreateKey(as, CreateKeyInput{TenantID: tid, Kind: KindSDK, Environment: "mars"})
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &rerr) || rerr.Resource != ResourceEnvironment || rerr.Name != "mars" {
		t.Fatalf("sdk key in an unknown environment: %v", err)
	}
	_, err = s.CreateKey(as, CreateKeyInput{TenantID: tid, Kind: KindSDK, Environment: "a/b\n"})
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &rerr) || rerr.Name != "" {
		t.Fatalf("sdk key in an environment that cannot exist: %v (the name must not be quoted back)", err)
	}
	// Another tenant's environment of the same name is not this tenant's.
	globex, err := s.CreateTenant(ctx, CreateTenantInput{Slug: "globex"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, CreateKeyInput{TenantID: globex.Tenant.ID, Kind: KindSDK, Environment: "eu"}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("globex key in acme's eu: %v", err)
	}
	// An operator (the CLI) creates keys without an actor key.
	op, err := s.CreateKey(store.WithActor(ctx, store.Actor{RequestID: "cli"}), CreateKeyInput{TenantID: tid, Kind: KindAdmin, Name: "recovery"})
	if err != nil || op.CreatedBy != nil {
		t.Fatalf("operator key: %+v %v", op, err)
	}
	keys, err := s.ListKeys(ctx, tid)
	if err != nil || len(keys) != 3 {
		t.Fatalf("keys: %d %v", len(keys), err)
	}

	var actions []string
	for _, e := range auditEntries(t, s, tid) {
		actions = append(actions, e.Action)
		if strings.Contains(string(e.After), k.Secret) || strings.Contains(string(e.After), op.Secret) {
			t.Fatalf("a secret in the audit log: %s", e.After)
		}
		if e.Action == "key.create" && e.ResourceID == op.ID.String() && (e.ActorKeyID != nil || e.RequestID != "cli") {
			t.Fatalf("operator key audit entry: %+v", e)
		}
	}
	if got := strings.Join(actions, " "); got != "tenant.bootstrap environment.create key.create key.create" {
		t.Fatalf("audit actions: %s", got)
	}
}

func TestRevokeKey(t *testing.T) {
	s, _ := newService(t)
	ctx := t.Context()
	acme, err := s.CreateTenant(ctx, CreateTenantInput{Slug: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	globex, err := s.CreateTenant(ctx, CreateTenantInput{Slug: "globex"})
	if err != nil {
		t.Fatal(err)
	}
	tid, first := acme.Tenant.ID, acme.AdminKey.ID
	revoke := func(id uuid.UUID) (APIKey, error) {
		return s.RevokeKey(store.WithActor(ctx, store.Actor{KeyID: &first}), RevokeKeyInput{TenantID: tid, KeyID: id})
	}

	if _, err := revoke(first); !errors.Is(err, ErrLastAdminKey) {
		t.Fatalf("revoking the only admin key: %v", err)
	}
	// An SDK key is not an admin key: it neither counts nor is protected.
	sdk, err := s.CreateKey(ctx, CreateKeyInput{TenantID: tid, Kind: KindSDK, Environment: "production"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := revoke(first); !errors.Is(err, ErrLastAdminKey) {
		t.Fatalf("revoking the only admin key beside an SDK key: %v", err)
	}
	if got, err := revoke(sdk.ID); err != nil || got.RevokedAt == nil {
		t.Fatalf("revoke the SDK key: %+v %v", got, err)
	}
	// Another tenant's key is not found, and its admin key does not count for acme.
	if _, err := revoke(globex.AdminKey.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke globex's key as acme: %v", err)
	}
	if _, err := revoke(uuid.New()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoke an unknown key: %v", err)
	}

	second, err := s.CreateKey(ctx, CreateKeyInput{TenantID: tid, Kind: KindAdmin})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := revoke(first)
	if err != nil || gone.RevokedAt == nil {
		t.Fatalf("revoke the first of two admin keys: %+v %v", gone, err)
	}
	// Revoking it again keeps the first revocation and records nothing.
	again, err := revoke(first)
	if err != nil || !again.RevokedAt.Equal(*gone.RevokedAt) {
		t.Fatalf("revoke again: %+v %v", again, err)
	}
	if _, err := revoke(second.ID); !errors.Is(err, ErrLastAdminKey) {
		t.Fatalf("revoking the last admin key: %v", err)
	}
	revocations := 0
	for _, e := range auditEntries(t, s, tid) {
		if e.Action == "key.revoke" {
			revocations++
		}
	}
	if revocations != 2 { // the SDK key and the first admin key
		t.Fatalf("%d revocations audited, want 2", revocations)
	}
}

// TestRevokeKeysConcurrently: every admin key of a tenant revoked at once; all but one
// revocation succeed, whatever the interleaving.
func TestRevokeKeysConcurrently(t *testing.T) {
	s, pool := newService(t)
	ctx := context.Background()
	for round := range 5 {
		acme, err := s.CreateTenant(ctx, CreateTenantInput{Slug: "acme-" + string(rune('a'+round))})
		if err != nil {
			t.Fatal(err)
		}
		ids := []uuid.UUID{acme.AdminKey.ID}
		for range 4 {
			k, err := s.CreateKey(ctx, CreateKeyInput{TenantID: acme.Tenant.ID, Kind: KindAdmin})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, k.ID)
		}
		errs := make([]error, len(ids))
		var start, done sync.WaitGroup
		start.Add(1)
		for i, id := range ids {
			done.Add(1)
			go func() {
				defer done.Done()
				start.Wait()
				_, errs[i] = s.RevokeKey(ctx, RevokeKeyInput{TenantID: acme.Tenant.ID, KeyID: id})
			}()
		}
		start.Done()
		done.Wait()
		refused := 0
		for _, err := range errs {
			switch {
			case errors.Is(err, ErrLastAdminKey):
				refused++
			case err != nil:
				t.Fatal(err)
			}
		}
		var left int
		if err := pool.QueryRow(ctx, `select count(*) from api_keys where tenant_id = $1 and revoked_at is null`, acme.Tenant.ID).Scan(&left); err != nil {
			t.Fatal(err)
		}
		if refused != 1 || left != 1 {
			t.Fatalf("round %d: %d refused, %d admin keys left; want 1 and 1", round, refused, left)
		}
	}
}

func TestListAuditPages(t *testing.T) {
	s, _ := newService(t)
	ctx := t.Context()
	acme, err := s.CreateTenant(ctx, CreateTenantInput{Slug: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c", "d"} {
		if _, err := s.CreateEnvironment(ctx, CreateEnvironmentInput{TenantID: acme.Tenant.ID, Name: name}); err != nil {
			t.Fatal(err)
		}
	}
	var seen []int64
	in := ListAuditInput{TenantID: acme.Tenant.ID, Limit: 2}
	for range 10 {
		page, err := s.ListAudit(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range page.Entries {
			seen = append(seen, e.ID)
		}
		if page.NextCursor == 0 {
			break
		}
		in.Before = page.NextCursor
	}
	if len(seen) != 5 {
		t.Fatalf("pages held %d entries, want 5: %v", len(seen), seen)
	}
	for i := 1; i < len(seen); i++ {
		if seen[i] >= seen[i-1] {
			t.Fatalf("not newest first: %v", seen)
		}
	}
}
