package limitr_test

import (
	"context"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// newEventsBenchPolicy is a cloud-mode Policy with a warm customer "u" far under a hard
// limit, with event forwarding on or off.
func newEventsBenchPolicy(tb testing.TB, forward bool) *limitr.Policy {
	tb.Helper()
	f := newFakeCP(tb, cloudPolicy("1000000000000000"))
	p := connect(tb, f, limitr.WithFlushInterval(time.Second), limitr.WithEventForwarding(forward))
	if _, err := p.CreateCustomer(context.Background(), "u", ""); err != nil {
		tb.Fatal(err)
	}
	return p
}

// BenchmarkCloudAllowEvents: a warm allowed call in cloud mode, without and with event
// forwarding. Forwarding wants only alert-worthy events, so the two must cost the same
// and allocate nothing.
func BenchmarkCloudAllowEvents(b *testing.B) {
	for _, tc := range []struct {
		name    string
		forward bool
	}{{"off", false}, {"on", true}} {
		b.Run(tc.name, func(b *testing.B) {
			p := newEventsBenchPolicy(b, tc.forward)
			ctx := context.Background()
			if ok, err := p.Allow(ctx, "u", "api", 1); !ok || err != nil {
				b.Fatal(ok, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := p.Allow(ctx, "u", "api", 1); !ok {
					b.Fatal("denied")
				}
			}
		})
	}
}

// BenchmarkCloudDenyEvents: a denied call in cloud mode, without and with event
// forwarding. With it, each denial builds its meter-limit event (repeats are coalesced
// by the forwarder, but the engine builds the event before the handler sees it).
func BenchmarkCloudDenyEvents(b *testing.B) {
	for _, tc := range []struct {
		name    string
		forward bool
	}{{"off", false}, {"on", true}} {
		b.Run(tc.name, func(b *testing.B) {
			f := newFakeCP(b, cloudPolicy("10"))
			p := connect(b, f, limitr.WithFlushInterval(time.Second), limitr.WithEventForwarding(tc.forward))
			ctx := context.Background()
			if _, err := p.CreateCustomer(ctx, "u", ""); err != nil {
				b.Fatal(err)
			}
			if ok, err := p.Allow(ctx, "u", "api", 10); !ok || err != nil {
				b.Fatal(ok, err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := p.Allow(ctx, "u", "api", 1); ok {
					b.Fatal("allowed")
				}
			}
		})
	}
}
