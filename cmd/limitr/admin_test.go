package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/store"
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
