package web

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/customers"
)

// TestCustomerCaps: the page lists a customer's spend caps with what SDKs committed of
// each; an editor resets (a new key) and removes one after confirming; a viewer sees
// them without the actions, and its posts are refused.
func TestCustomerCaps(t *testing.T) {
	f := newFullEnv(t)
	rec := f.createCustomer(customers.CreateInput{ID: "acme", Plan: "basic"})
	f.createCustomer(customers.CreateInput{ID: "bare", Plan: "basic"})
	ten := json.Number("10")
	cp, created, err := f.customers.PutCap(t.Context(), f.staging, "acme", "budget",
		customers.CapInput{Value: &ten, Shared: true, SharedWith: []string{"user"}, ResetInc: "30days"})
	if err != nil || !created {
		t.Fatalf("PutCap: %v %v", created, err)
	}
	// What SDKs consumed of it, as a usage batch records it.
	if _, err := f.pool.Exec(t.Context(), `insert into cap_usage_totals (tenant_id, environment_id, customer_id, customer_uid, cap_key, period_start, units)
		values ($1, $2, 'acme', $3, $4, $5, 2.5)`, f.tenant.ID, f.staging.ID, rec.UID, cp.Key, cp.ResetAt); err != nil {
		t.Fatal(err)
	}

	ed := f.loginStaging("editor@acme.test")
	r := ed.do(http.MethodGet, "/customers/acme", nil, nil)
	mustContain(t, "caps shown", r, `id="cap-budget"`, `10 rune`, `id="cap-budget-used">2.5 `, "every 30days", cp.Key,
		"this customer and those whose refs lead here (user)", `/customers/acme/caps/budget/reset`, `/customers/acme/caps/budget/remove`)
	r = ed.do(http.MethodGet, "/customers/bare", nil, nil)
	mustContain(t, "no caps", r, `id="no-caps">No spend caps.`)
	tok := csrfInput.FindStringSubmatch(r.body)[1]

	// Reset asks first, then mints a new key: the page shows nothing committed.
	r = ed.do(http.MethodPost, "/customers/acme/caps/budget/reset", url.Values{"csrf_token": {tok}}, nil)
	mustContain(t, "confirm reset", r, `id="confirm"`, `name="confirm" value="yes"`, "Start spend cap budget of customer acme from zero")
	if got, _ := f.customers.GetCap(t.Context(), f.staging, "acme", "budget"); got.Key != cp.Key {
		t.Fatal("reset before confirmation")
	}
	r = ed.do(http.MethodPost, "/customers/acme/caps/budget/reset", url.Values{"csrf_token": {tok}, "confirm": {"yes"}}, nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/customers/acme?done=capreset" {
		t.Fatalf("reset: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	reset, err := f.customers.GetCap(t.Context(), f.staging, "acme", "budget")
	if err != nil || reset.Key == cp.Key {
		t.Fatalf("after reset: %+v %v", reset, err)
	}
	if a := f.auditActor("customer.cap.reset"); a != f.editor.ID.String() {
		t.Fatalf("reset audit actor %q", a)
	}
	r = ed.do(http.MethodGet, "/customers/acme?done=capreset", nil, nil)
	mustContain(t, "after reset", r, "Spend cap reset.", `id="cap-budget-used">0<`, reset.Key)

	// A viewer sees the cap, no actions, and its posts are refused.
	vw := f.loginStaging("viewer@acme.test")
	r = vw.do(http.MethodGet, "/customers/acme", nil, nil)
	mustContain(t, "viewer", r, `id="cap-budget"`)
	if strings.Contains(r.body, "/caps/budget/remove") {
		t.Error("the viewer's page offers to remove a cap")
	}
	vtok := csrfInput.FindStringSubmatch(r.body)[1]
	for _, p := range []string{"/customers/acme/caps/budget/reset", "/customers/acme/caps/budget/remove"} {
		if r := vw.do(http.MethodPost, p, url.Values{"csrf_token": {vtok}, "confirm": {"yes"}}, nil); r.status != http.StatusForbidden {
			t.Errorf("viewer POST %s: %d", p, r.status)
		}
	}

	// Remove, then removing again says there is none.
	r = ed.do(http.MethodPost, "/customers/acme/caps/budget/remove", url.Values{"csrf_token": {tok}, "confirm": {"yes"}}, nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/customers/acme?done=capremoved" {
		t.Fatalf("remove: %d %s\n%s", r.status, r.header.Get("Location"), r.body)
	}
	if _, err := f.customers.GetCap(t.Context(), f.staging, "acme", "budget"); !errors.Is(err, customers.ErrNoCap) {
		t.Fatalf("after removal: %v", err)
	}
	r = ed.do(http.MethodPost, "/customers/acme/caps/budget/remove", url.Values{"csrf_token": {tok}, "confirm": {"yes"}}, nil)
	if r.status != http.StatusNotFound || !strings.Contains(r.body, "The customer has no spend cap of this id.") {
		t.Fatalf("remove twice: %d\n%s", r.status, r.body)
	}
}
