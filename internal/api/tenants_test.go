package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/httpx/problem"
)

// adminKey creates an admin key and returns its secret and id.
func (h *custHarness) adminKey(tn custTenant, name string) (string, uuid.UUID) {
	h.t.Helper()
	code, body := h.do(http.MethodPost, "/v1/keys", tn.secret, map[string]string{"kind": "admin", "name": name})
	if code != http.StatusCreated {
		h.t.Fatalf("create admin key: %d %s", code, body)
	}
	var k struct {
		ID     uuid.UUID `json:"id"`
		Secret string    `json:"secret"`
	}
	if err := json.Unmarshal(body, &k); err != nil {
		h.t.Fatal(err)
	}
	return k.Secret, k.ID
}

// activeAdminKeys counts a tenant's unrevoked admin keys in Postgres.
func (h *custHarness) activeAdminKeys(tenantID uuid.UUID) int {
	h.t.Helper()
	var n int
	if err := h.pool.QueryRow(h.t.Context(), `select count(*) from api_keys where tenant_id = $1 and kind = 'admin' and revoked_at is null`,
		tenantID).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}

func wantLastAdminKeyProblem(t *testing.T, what string, code int, body []byte) {
	t.Helper()
	var p problem.Problem
	if err := json.Unmarshal(body, &p); err != nil || code != http.StatusConflict {
		t.Fatalf("%s: %d %s, want a 409 problem", what, code, body)
	}
	if p.Type != problem.TypeBase+"last-admin-key" || !strings.Contains(p.Detail, "create another admin key first") {
		t.Fatalf("%s: problem %+v", what, p)
	}
}

// TestRevokeLastAdminKey: revoking the tenant's last active admin key would lock the
// tenant out of its own account; it is refused with a 409 until another admin key exists.
func TestRevokeLastAdminKey(t *testing.T) {
	h := newCustHarness(t)
	a := h.bootstrap("acme")
	doc := oaDoc(t)

	// Another tenant's admin keys and this tenant's SDK keys do not count.
	h.bootstrap("globex")
	_, sdkID := h.sdkKey(a, "production")

	req := httptest.NewRequest(http.MethodDelete, "/v1/keys/"+a.keyID.String(), nil)
	req.Header.Set("Authorization", "Bearer "+a.secret)
	rec := httptest.NewRecorder()
	h.srv.Handler().ServeHTTP(rec, req)
	wantLastAdminKeyProblem(t, "revoking the only admin key", rec.Code, rec.Body.Bytes())
	oaConform(t, doc, "DELETE", "/v1/keys/{id}", rec.Code, rec.Header(), rec.Body.Bytes())
	if n := h.activeAdminKeys(a.tenantID); n != 1 {
		t.Fatalf("%d active admin keys after a refused revocation", n)
	}
	// The key still works, and SDK keys can still be revoked.
	if code, body := h.do(http.MethodDelete, "/v1/keys/"+sdkID.String(), a.secret, nil); code != 200 {
		t.Fatalf("revoke an SDK key: %d %s", code, body)
	}

	// With a second admin key, the first can go; then the second is the last.
	second, secondID := h.adminKey(a, "second")
	if code, body := h.do(http.MethodDelete, "/v1/keys/"+a.keyID.String(), second, nil); code != 200 {
		t.Fatalf("revoke the first of two admin keys: %d %s", code, body)
	}
	code, body := h.do(http.MethodDelete, "/v1/keys/"+secondID.String(), second, nil)
	wantLastAdminKeyProblem(t, "revoking the last admin key with itself", code, body)
	// Revoking an already revoked key stays harmless: it changes nothing.
	if code, body := h.do(http.MethodDelete, "/v1/keys/"+a.keyID.String(), second, nil); code != 200 {
		t.Fatalf("revoke a revoked key again: %d %s", code, body)
	}
	if code, body := h.do(http.MethodGet, "/v1/tenant", second, nil); code != 200 {
		t.Fatalf("the last admin key after the refusals: %d %s", code, body)
	}

	// Refusals are not audited as revocations.
	var revocations int
	if err := h.pool.QueryRow(t.Context(), `select count(*) from audit_log where tenant_id = $1 and action = 'key.revoke' and resource_id = $2`,
		a.tenantID, secondID.String()).Scan(&revocations); err != nil {
		t.Fatal(err)
	}
	if revocations != 0 {
		t.Fatalf("%d audit entries for a refused revocation", revocations)
	}
}

// TestRevokeLastAdminKeysConcurrently: two admin keys revoke each other at the same moment.
// Each check alone sees another admin key; exactly one revocation may succeed.
func TestRevokeLastAdminKeysConcurrently(t *testing.T) {
	h := newCustHarness(t)
	const rounds = 15
	for i := range rounds {
		tn := h.bootstrap("race-" + string(rune('a'+i)))
		second, secondID := h.adminKey(tn, "second")
		// Warm the key cache so both requests reach the revocation at once.
		for _, s := range []string{tn.secret, second} {
			if code, body := h.do(http.MethodGet, "/v1/tenant", s, nil); code != 200 {
				t.Fatalf("warm-up: %d %s", code, body)
			}
		}
		type call struct{ secret, target string }
		calls := []call{{tn.secret, secondID.String()}, {second, tn.keyID.String()}}
		codes := make([]int, len(calls))
		bodies := make([][]byte, len(calls))
		var start, done sync.WaitGroup
		start.Add(1)
		for j, c := range calls {
			done.Add(1)
			go func() {
				defer done.Done()
				req := httptest.NewRequest(http.MethodDelete, "/v1/keys/"+c.target, nil)
				req.Header.Set("Authorization", "Bearer "+c.secret)
				rec := httptest.NewRecorder()
				start.Wait()
				h.srv.Handler().ServeHTTP(rec, req)
				codes[j], bodies[j] = rec.Code, rec.Body.Bytes()
			}()
		}
		start.Done()
		done.Wait()
		ok, refused := 0, 0
		for j := range calls {
			switch codes[j] {
			case http.StatusOK:
				ok++
			case http.StatusConflict:
				wantLastAdminKeyProblem(t, "the losing revocation", codes[j], bodies[j])
				refused++
			case http.StatusUnauthorized:
				// The other revocation won and revoked this caller's key before it was
				// authenticated: also a refusal.
				refused++
			default:
				t.Fatalf("round %d: revocation %d: %d %s", i, j, codes[j], bodies[j])
			}
		}
		if n := h.activeAdminKeys(tn.tenantID); ok != 1 || refused != 1 || n != 1 {
			t.Fatalf("round %d: %d revocations succeeded, %d refused, %d admin keys left; want 1, 1, 1 (codes %v)", i, ok, refused, n, codes)
		}
	}
}
