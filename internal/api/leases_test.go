package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/limitr/limitr/internal/wire"
)

func (f *syncFixture) lease(secret string, in any) (int, wire.LeaseReply, []byte) {
	f.t.Helper()
	code, body := f.do(http.MethodPost, wire.PathLeases, secret, in)
	var r wire.LeaseReply
	if code == http.StatusOK {
		if err := json.Unmarshal(body, &r); err != nil {
			f.t.Fatal(err)
		}
	}
	return code, r, body
}

func leaseAsk(cust, limit, target, used string) wire.LeaseAsk {
	return wire.LeaseAsk{Customer: cust, Entitlement: "ai_input", PeriodStart: thisMonth(), Limit: limit, Target: target, Used: used}
}

// Leases through the API: grants to the limit, a leased batch committing against the
// lease, a return freeing it, per-ask errors and field-naming 422s.
func TestLeasesOverHTTP(t *testing.T) {
	f := newSyncFixture(t)
	req := func(inst string, asks ...wire.LeaseAsk) wire.LeaseRequest {
		return wire.LeaseRequest{InstanceID: inst, Leases: asks}
	}
	code, r, body := f.lease(f.sdk, req("a", leaseAsk("alice", "100", "60", "0"), leaseAsk("ghost", "100", "1", "0"), leaseAsk("cus_alice", "100", "70", "0")))
	if code != http.StatusOK || len(r.Leases) != 3 || r.TTLMillis != 15_000 {
		t.Fatalf("grant: %d %s", code, body)
	}
	// The alt id names the same meter: the instance's lease grows to 70.
	if g := r.Leases[0]; g.Granted != "60" || g.Customer != "alice" || g.Error != "" {
		t.Errorf("alice: %+v", g)
	}
	if g := r.Leases[1]; g.Error != wire.ReasonUnknownCustomer {
		t.Errorf("ghost: %+v", g)
	}
	if g := r.Leases[2]; g.Granted != "70" || g.Available != "30" || g.Customer != "cus_alice" {
		t.Errorf("cus_alice: %+v", g)
	}
	_, r, _ = f.lease(f.sdk, req("b", leaseAsk("alice", "100", "50", "0")))
	if g := r.Leases[0]; g.Granted != "30" || g.Available != "0" {
		t.Errorf("b: %+v", g)
	}
	// a's leased batch: 40 units move from its lease to the committed usage.
	b := batch("a", 1, delta("alice", "ai_input", "40"))
	b.Leased = true
	f.ack(f.usage(f.sdk, b, true))
	_, r, _ = f.lease(f.sdk, req("a", leaseAsk("alice", "100", "80", "40")))
	if g := r.Leases[0]; g.Granted != "70" || g.Committed != "40" || g.Available != "0" {
		t.Errorf("a after its batch: %+v", g)
	}
	// Another tenant's SDK key never reaches alice's meter.
	_, r, _ = f.lease(f.otherSDK, req("a", leaseAsk("alice", "100", "80", "0")))
	if g := r.Leases[0]; g.Error != wire.ReasonUnknownCustomer {
		t.Errorf("other tenant: %+v", g)
	}
	// a returns: its 30 outstanding units are free for b at once.
	if code, body := f.do(http.MethodPost, wire.PathReturn, f.sdk, wire.LeaseReturn{InstanceID: "a"}); code != http.StatusNoContent {
		t.Fatalf("return: %d %s", code, body)
	}
	_, r, _ = f.lease(f.sdk, req("b", leaseAsk("alice", "100", "100", "0")))
	if g := r.Leases[0]; g.Granted != "60" || g.Available != "0" {
		t.Errorf("b after a's return: %+v", g)
	}
	// Invalid asks name their fields.
	code, _, body = f.lease(f.sdk, req("b", leaseAsk("alice", "100", "5", "0"), leaseAsk("alice", "1.5e3", "-1", "x")))
	if code != http.StatusUnprocessableEntity {
		t.Fatalf("invalid: %d %s", code, body)
	}
	for _, p := range []string{"leases[1].limit", "leases[1].target", "leases[1].used"} {
		if !strings.Contains(string(body), `"`+p+`"`) {
			t.Errorf("the problem does not name %s: %s", p, body)
		}
	}
	// Admin keys are refused.
	if code, _, _ := f.lease(f.tn.secret, req("b", leaseAsk("alice", "100", "5", "0"))); code != http.StatusForbidden {
		t.Errorf("admin key: %d", code)
	}
}
