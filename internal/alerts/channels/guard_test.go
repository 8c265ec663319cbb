package channels

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

func TestIsPublic(t *testing.T) {
	for addr, want := range map[string]bool{
		"8.8.8.8": true, "1.1.1.1": true, "2001:4860:4860::8888": true,
		"127.0.0.1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "100.64.0.1": false, "0.0.0.0": false, "224.0.0.1": false,
		"::1": false, "fc00::1": false, "fe80::1": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false,
	} {
		if got := IsPublic(netip.MustParseAddr(addr)); got != want {
			t.Errorf("IsPublic(%s) = %v, want %v", addr, got, want)
		}
	}
}

// A tenant's webhook pointing at the control plane's own network is refused at the
// dial, for good (no retry), however the URL names the address.
func TestPublicOnlyRefusesPrivateDestinations(t *testing.T) {
	hit := false
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hit = true }))
	defer srv.Close()
	client := PublicOnlyClient(5 * time.Second)
	for _, url := range []string{srv.URL, "http://localhost:" + srv.URL[len("http://127.0.0.1:"):]} {
		w := Webhook{URL: url, Secrets: []string{newSecret(1)}, HTTPClient: client}
		err := w.Send(context.Background(), testMessage())
		var de *DeliveryError
		if !errors.As(err, &de) || de.Retryable || !errors.Is(err, ErrPrivateDestination) {
			t.Fatalf("%s: %v, want a permanent ErrPrivateDestination", url, err)
		}
	}
	port := srv.URL[len("http://127.0.0.1:"):]
	e := Email{Host: "127.0.0.1", From: "a@b.test", To: []string{"c@d.test"}, TLS: "none", Timeout: 5 * time.Second,
		Dial: PublicOnlyDialer(time.Second).DialContext}
	if _, err := fmt.Sscan(port, &e.Port); err != nil {
		t.Fatal(err)
	}
	if err := e.Send(context.Background(), testMessage()); !errors.Is(err, ErrPrivateDestination) || IsRetryable(err) {
		t.Fatalf("email to loopback: %v", err)
	}
	if hit {
		t.Fatal("the private destination was reached")
	}
}
