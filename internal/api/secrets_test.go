package api

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/platform/pgtest"
	"github.com/limitr/limitr/internal/secrets"
)

// No secret appears in plaintext anywhere in the database: API keys created with and
// without an Idempotency-Key (whose replies the server keeps for retries), through
// tenant bootstrap and key creation, are absent from a full pg_dump. (Before: the
// replies of idempotent POST /v1/keys and POST /v1/tenants were stored as sent.)
func TestNoSecretInTheDatabase(t *testing.T) {
	dump, err := exec.LookPath("pg_dump")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("pg_dump is not installed: scripts/services.sh installs PostgreSQL's client")
		}
		t.Skip("pg_dump is not installed")
	}
	dbURL, pool := pgtest.NewMigrated(t)
	k, _ := secrets.GenerateKey()
	kr, err := secrets.ParseKeyring(k)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{OperatorToken: "op"}, Deps{Pool: pool, Logger: slog.New(slog.DiscardHandler), Secrets: kr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	post := func(path, bearer, idemKey, body string) map[string]any {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+bearer)
		req.Header.Set("Content-Type", "application/json")
		if idemKey != "" {
			req.Header.Set("Idempotency-Key", idemKey)
		}
		rec := httptest.NewRecorder()
		srv.Handler().ServeHTTP(rec, req)
		if rec.Code != http.StatusCreated {
			t.Fatalf("POST %s: %d %s", path, rec.Code, rec.Body)
		}
		var out map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	var secretsSeen []string
	boot := post("/v1/tenants", "op", "boot-1", `{"slug": "acme"}`)
	admin := boot["secret"].(string)
	secretsSeen = append(secretsSeen, admin)
	for i, body := range []string{
		`{"kind": "admin", "name": "second admin"}`,
		`{"kind": "sdk", "environment": "production", "name": "app"}`,
	} {
		out := post("/v1/keys", admin, "key-"+string(rune('a'+i)), body)
		secretsSeen = append(secretsSeen, out["secret"].(string))
		// A replay gives the same secret back.
		again := post("/v1/keys", admin, "key-"+string(rune('a'+i)), body)
		if again["secret"] != out["secret"] {
			t.Fatalf("replay gave another secret")
		}
	}
	out := post("/v1/keys", admin, "", `{"kind": "sdk", "environment": "staging", "name": "no idempotency key"}`)
	secretsSeen = append(secretsSeen, out["secret"].(string))

	cmd := exec.Command(dump, "--no-owner", "--data-only", "--inserts", dbURL)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	data, err := cmd.Output()
	if err != nil {
		t.Fatalf("pg_dump: %v: %s", err, stderr.String())
	}
	if !bytes.Contains(data, []byte("idempotency_keys")) || !bytes.Contains(data, []byte("api_keys")) {
		t.Fatalf("the dump does not hold the tables (%d bytes)", len(data))
	}
	for _, s := range secretsSeen {
		if bytes.Contains(data, []byte(s)) {
			t.Errorf("secret %s…%s is in plaintext in the database", s[:12], s[len(s)-4:])
		}
		// The random part alone must not be there either (the key prefix, 8 of its 32
		// characters, is stored to find the row; the rest never is).
		if tail := s[len(s)-24:]; bytes.Contains(data, []byte(tail)) {
			t.Errorf("the secret part of %s… is in the database", s[:12])
		}
	}
}
