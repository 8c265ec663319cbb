package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/users"
)

func TestAdminBootstrap(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"admin", "bootstrap", "--tenant", "acme", "--name", "Acme Inc", "--database-url", dbURL, "--json"}, &out, &errOut); code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var got store.Bootstrapped
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err, out.String())
	}
	if got.Tenant.Slug != "acme" || got.Tenant.Name != "Acme Inc" || len(got.Environments) != 2 {
		t.Fatalf("%+v", got)
	}
	if _, err := store.ParsePrefix(got.Secret); err != nil || !strings.HasPrefix(got.Secret, "lk_admin_") {
		t.Fatalf("secret %q: %v", got.Secret, err)
	}
	out.Reset()
	errOut.Reset()
	if code := run([]string{"admin", "bootstrap", "--tenant", "acme", "--database-url", dbURL}, &out, &errOut); code != exitFail || !strings.Contains(errOut.String(), "already exists") {
		t.Fatalf("second bootstrap: exit %d, %s", code, errOut.String())
	}
	if code := run([]string{"admin", "bootstrap", "--tenant", "Bad Slug!", "--database-url", dbURL}, &out, &errOut); code != exitFail {
		t.Fatalf("bad slug: exit %d", code)
	}
	if code := run([]string{"admin", "bootstrap", "--database-url", dbURL}, &out, &errOut); code != exitUsage {
		t.Fatalf("missing tenant: exit %d", code)
	}
}

// TestAdminCreateKey: a tenant whose admin keys are all revoked gets a new one from the
// CLI, recorded in the audit log with no actor key.
func TestAdminCreateKey(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"admin", "bootstrap", "--tenant", "acme", "--database-url", dbURL, "--json"}, &out, &errOut); code != exitOK {
		t.Fatalf("bootstrap: exit %d: %s", code, errOut.String())
	}
	var boot store.Bootstrapped
	if err := json.Unmarshal(out.Bytes(), &boot); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	// Locked out: the only admin key is revoked.
	if _, err := pool.Exec(ctx, `update api_keys set revoked_at = now() where tenant_id = $1`, boot.Tenant.ID); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	errOut.Reset()
	if code := run([]string{"admin", "create-key", "--tenant", "acme", "--name", "recovery", "--database-url", dbURL}, &out, &errOut); code != exitOK {
		t.Fatalf("create-key: exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	secret := lines[len(lines)-1]
	k, err := store.Authenticate(ctx, pool, secret)
	if err != nil || k.Kind != store.KindAdmin || k.Name != "recovery" || k.TenantID != boot.Tenant.ID || k.CreatedBy != nil {
		t.Fatalf("the printed secret %q: %+v %v\n%s", secret, k, err, out.String())
	}
	var actor *string
	var requestID string
	if err := pool.QueryRow(ctx, `select actor_key_id::text, request_id from audit_log where tenant_id = $1 and action = 'key.create' and resource_id = $2`,
		boot.Tenant.ID, k.ID.String()).Scan(&actor, &requestID); err != nil {
		t.Fatalf("audit entry: %v", err)
	}
	if actor != nil || requestID != "cli" {
		t.Fatalf("audit entry: actor %v, request id %q; want no actor and cli", actor, requestID)
	}

	// An SDK key, as JSON.
	out.Reset()
	if code := run([]string{"admin", "create-key", "--tenant", "acme", "--kind", "sdk", "--environment", "staging", "--database-url", dbURL, "--json"}, &out, &errOut); code != exitOK {
		t.Fatalf("create-key sdk: exit %d: %s", code, errOut.String())
	}
	var sdk struct {
		Kind, Environment, Secret string
	}
	if err := json.Unmarshal(out.Bytes(), &sdk); err != nil || sdk.Kind != "sdk" || sdk.Environment != "staging" || !strings.HasPrefix(sdk.Secret, "lk_sdk_") {
		t.Fatalf("sdk key: %+v %v: %s", sdk, err, out.String())
	}

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--tenant", "nobody"}, exitFail, `no tenant "nobody"`},
		{[]string{"--tenant", "acme", "--kind", "sdk"}, exitFail, "environment: is required for an sdk key"},
		{[]string{"--tenant", "acme", "--kind", "sdk", "--environment", "mars"}, exitFail, `no environment "mars"`},
		{[]string{"--tenant", "acme", "--kind", "root"}, exitFail, `kind: must be "admin" or "sdk"`},
		{[]string{"--tenant", "acme", "--kind", "admin", "--environment", "staging"}, exitFail, "admin keys are not bound"},
		{[]string{}, exitUsage, "--tenant"},
	} {
		out.Reset()
		errOut.Reset()
		args := append([]string{"admin", "create-key", "--database-url", dbURL}, tc.args...)
		if code := run(args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", tc.args, code, errOut.String(), tc.code, tc.want)
		}
		if out.Len() != 0 {
			t.Errorf("%q: stdout %q", tc.args, out.String())
		}
	}
}

func TestAdminGenSecretKey(t *testing.T) {
	var keys []string
	for _, args := range [][]string{{}, {"--id", "2024b"}} {
		var out, errOut bytes.Buffer
		if code := run(append([]string{"admin", "gen-secret-key"}, args...), &out, &errOut); code != exitOK {
			t.Fatalf("%q: exit %d: %s", args, code, errOut.String())
		}
		key := strings.TrimSpace(out.String())
		if strings.Count(out.String(), "\n") != 1 {
			t.Fatalf("%q: output %q, want one line", args, out.String())
		}
		kr, err := secrets.ParseKeyring(key)
		if err != nil {
			t.Fatalf("%q: the printed key does not parse: %v", args, err)
		}
		if len(args) > 0 && kr.IDs()[0] != "2024b" {
			t.Fatalf("id %v", kr.IDs())
		}
		keys = append(keys, key)
	}
	if strings.HasSuffix(keys[1], keys[0]) {
		t.Fatal("two generated keys are equal")
	}
	// Together they form a rotation spec, newest first.
	if _, err := secrets.ParseKeyring(keys[1] + "," + keys[0]); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"admin", "gen-secret-key", "--id", "a.b"}, &out, &errOut); code != exitUsage {
		t.Fatalf("bad id: exit %d", code)
	}
}

// TestAdminCreateUser: the first owner of a tenant, by slug or id, with a password from
// stdin or a generated one printed once; both log in.
func TestAdminCreateUser(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	var out, errOut bytes.Buffer
	if code := run([]string{"admin", "bootstrap", "--tenant", "acme", "--database-url", dbURL, "--json"}, &out, &errOut); code != exitOK {
		t.Fatalf("bootstrap: exit %d: %s", code, errOut.String())
	}
	var boot store.Bootstrapped
	if err := json.Unmarshal(out.Bytes(), &boot); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	svc, err := users.NewService(pool, users.Config{})
	if err != nil {
		t.Fatal(err)
	}

	out.Reset()
	errOut.Reset()
	createUser := runAdminCreateUser(strings.NewReader("a long passphrase\n"))
	if code := createUser([]string{"--tenant", "acme", "--email", "Owner@Acme.test", "--password-stdin", "--database-url", dbURL}, &out, &errOut); code != exitOK {
		t.Fatalf("create-user: exit %d: %s", code, errOut.String())
	}
	if strings.Contains(out.String(), "password") {
		t.Fatalf("a password from stdin is printed: %s", out.String())
	}
	s, _, err := svc.Login(ctx, users.LoginInput{Email: "owner@acme.test", Password: "a long passphrase"})
	if err != nil || s.Role != users.RoleOwner || s.TenantID != boot.Tenant.ID {
		t.Fatalf("login: %+v %v", s, err)
	}

	out.Reset()
	createUser = runAdminCreateUser(strings.NewReader(""))
	if code := createUser([]string{"--tenant", boot.Tenant.ID.String(), "--email", "viewer@acme.test", "--role", "viewer", "--database-url", dbURL}, &out, &errOut); code != exitOK {
		t.Fatalf("create-user by id: exit %d: %s", code, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if s, _, err := svc.Login(ctx, users.LoginInput{Email: "viewer@acme.test", Password: lines[len(lines)-1]}); err != nil || s.Role != users.RoleViewer {
		t.Fatalf("login with the generated password: %v\n%s", err, out.String())
	}

	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--tenant", "acme", "--email", "OWNER@acme.test"}, exitFail, "already exists"},
		{[]string{"--tenant", "nope", "--email", "x@acme.test"}, exitFail, `no tenant "nope"`},
		{[]string{"--tenant", "acme", "--email", "x@acme.test", "--role", "root"}, exitFail, "--role: must be one of"},
		{[]string{"--tenant", "acme"}, exitUsage, "required"},
	} {
		errOut.Reset()
		args := append(tc.args, "--database-url", dbURL)
		if code := runAdminCreateUser(strings.NewReader(""))(args, &out, &errOut); code != tc.code || !strings.Contains(errOut.String(), tc.msg) {
			t.Errorf("%v: exit %d, %s; want %d and %q", tc.args, code, errOut.String(), tc.code, tc.msg)
		}
	}
}
