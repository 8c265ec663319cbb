package stripemock

import (
	"net"
	"net/http"
	"net/url"
	"testing"
)

func TestStart(t *testing.T) {
	var addr string
	t.Run("running", func(t *testing.T) {
		base := Start(t)
		u, err := url.Parse(base)
		if err != nil || u.Scheme != "http" || u.Hostname() != "127.0.0.1" {
			t.Fatalf("base %q", base)
		}
		addr = u.Host
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/invoices/in_1", nil)
		req.Header.Set("Authorization", "Bearer sk_test_123")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Stripe-Mock-Version") == "" {
			t.Fatalf("GET /v1/invoices/in_1: %s %v", resp.Status, resp.Header)
		}
	})
	// The cleanup of the subtest stopped it.
	if conn, err := net.Dial("tcp", addr); err == nil {
		_ = conn.Close()
		t.Errorf("stripe-mock still listens at %s after its test", addr)
	}
}

func TestBinaryIsPinned(t *testing.T) {
	bin, err := Binary()
	if err != nil {
		t.Fatal(err)
	}
	if !isVersion(bin) {
		t.Fatalf("%s is not stripe-mock %s", bin, Version)
	}
}
