package idempotency_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/secrets"
)

// A stored reply can hold a secret shown once (a new API key): it is never stored in
// plaintext. (Before: the body was kept as it was sent.)
func TestRepliesAreSealedAtRest(t *testing.T) {
	pool := testPool(t)
	kr := newKeyring(t)
	s := newServerOn(t, pool, kr)
	const secret = "lk_admin_TOPSECRETTOPSECRETTOPSECRETTOPS"
	first := s.do(req{key: "k-seal", body: secret})
	if first.Code != http.StatusCreated || !strings.Contains(first.Body.String(), secret) {
		t.Fatalf("first: %d %s", first.Code, first.Body)
	}
	var body []byte
	var sealed bool
	if err := pool.QueryRow(context.Background(), `select body, sealed from idempotency_keys where key = 'k-seal'`).Scan(&body, &sealed); err != nil {
		t.Fatal(err)
	}
	if !sealed || strings.Contains(string(body), secret) || strings.Contains(string(body), "echo") {
		t.Fatalf("stored reply in plaintext (sealed=%v): %q", sealed, body)
	}
	// The replay is the reply, byte for byte.
	again := s.do(req{key: "k-seal", body: secret})
	if again.Code != http.StatusCreated || again.Body.String() != first.Body.String() || again.Header().Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay: %d %s", again.Code, again.Body)
	}
}

// A reply sealed under the old key still replays after a rotation (new key first,
// the old one kept behind it).
func TestRotationReplays(t *testing.T) {
	pool := testPool(t)
	old, _ := secrets.GenerateKey()
	oldRing, err := secrets.ParseKeyring(old)
	if err != nil {
		t.Fatal(err)
	}
	first := newServerOn(t, pool, oldRing).do(req{key: "k-rot", body: "x"})
	fresh, _ := secrets.GenerateKey()
	ring, err := secrets.ParseKeyring(fresh + "," + old)
	if err != nil {
		t.Fatal(err)
	}
	if r := newServerOn(t, pool, ring).do(req{key: "k-rot", body: "x"}); r.Code != first.Code || r.Body.String() != first.Body.String() {
		t.Fatalf("replay with the old key behind a new one: %d %s", r.Code, r.Body)
	}
}

// A reply sealed under a key the server no longer has (a restart with an ephemeral
// key, or a dropped key) is withheld: the retry learns the request completed and is
// not run again.
func TestReplyUnderAnotherKeyIsWithheld(t *testing.T) {
	pool := testPool(t)
	s1 := newServerOn(t, pool, newKeyring(t))
	if r := s1.do(req{key: "k-lost", body: "x"}); r.Code != http.StatusCreated {
		t.Fatalf("first: %d", r.Code)
	}
	s2 := newServerOn(t, pool, newKeyring(t))
	r := s2.do(req{key: "k-lost", body: "x"})
	if r.Code != http.StatusConflict || !strings.Contains(r.Body.String(), "idempotency-reply-unavailable") ||
		!strings.Contains(r.Body.String(), "status 201") {
		t.Fatalf("replay under another key: %d %s", r.Code, r.Body)
	}
	if n := s2.calls.Load(); n != 0 {
		t.Fatalf("the request ran again: %d", n)
	}
	// Without a sealer nothing is kept at all.
	s3 := newServerOn(t, pool, nil)
	if r := s3.do(req{key: "k-none", body: "x"}); r.Code != http.StatusCreated {
		t.Fatalf("first without a sealer: %d", r.Code)
	}
	var body []byte
	if err := pool.QueryRow(context.Background(), `select body from idempotency_keys where key = 'k-none'`).Scan(&body); err != nil || body != nil {
		t.Fatalf("stored without a sealer: %q %v", body, err)
	}
	if r := s3.do(req{key: "k-none", body: "x"}); r.Code != http.StatusConflict || s3.calls.Load() != 1 {
		t.Fatalf("replay without a sealer: %d, calls %d", r.Code, s3.calls.Load())
	}
}
