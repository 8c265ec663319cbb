package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// SDKClient is an HTTP client for one SDK instance: its own transport, so that every
// instance has its own connections, as separate processes would.
func SDKClient() *http.Client {
	return &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     90 * time.Second,
	}}
}

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// ConnectSDKs starts n cloud-mode Policies on t (concurrently) and waits until every
// push stream is up. Close them with CloseSDKs.
func ConnectSDKs(ctx context.Context, t Target, n int, opts ...limitr.CloudOption) ([]*limitr.Policy, error) {
	ps := make([]*limitr.Policy, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range ps {
		wg.Go(func() {
			o := append([]limitr.CloudOption{limitr.WithBaseURL(t.BaseURL), limitr.WithHTTPClient(SDKClient()),
				limitr.WithLogger(quietLog)}, opts...)
			ps[i], errs[i] = limitr.Cloud(ctx, t.SDKKey, o...)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			CloseSDKs(ps)
			return nil, fmt.Errorf("sdk %d: %w", i, err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		up := 0
		for _, p := range ps {
			if p.SyncStats().StreamConnected {
				up++
			}
		}
		if up == n {
			return ps, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			CloseSDKs(ps)
			return nil, fmt.Errorf("%d of %d push streams up after 15 s", up, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// CloseSDKs closes every non-nil Policy (flushing its usage), concurrently; it returns
// the first error.
func CloseSDKs(ps []*limitr.Policy) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make([]error, len(ps))
	var wg sync.WaitGroup
	for i, p := range ps {
		if p != nil {
			wg.Go(func() { errs[i] = p.Close(ctx) })
		}
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// PublishOptions shape a publish-to-enforce run.
type PublishOptions struct {
	SDKs      int           // connected cloud-mode instances
	Publishes int           // versions published, one after the other
	Gap       time.Duration // pause between publishes once every SDK has the previous one
	PollEvery time.Duration // how often the watcher reads every SDK's Version()
	Timeout   time.Duration // per publish: an SDK not switched by then counts as missed
	// Plan and Entitlement name the hard limit each version changes; Customer is a
	// customer on Plan that every SDK holds, whose Limit() is checked after the switch.
	Plan, Entitlement, Customer string
}

// PublishResult holds the publish-to-enforce latencies: from sending the publish
// request to each SDK's Version() reporting the new document.
type PublishResult struct {
	SDKs, Publishes int
	Latency         Dist   // over every (publish, SDK)
	PerPublish      []Dist // each publish's spread over the SDKs
	PublishCall     Dist   // the publish request's own latency (POST .../publish)
	Missed          int    // (publish, SDK) pairs not switched within Timeout
	WrongLimit      int    // switched, but Limit() did not show the new value
}

func (r PublishResult) String() string {
	return fmt.Sprintf("publish-to-enforce sdks=%d publishes=%d: %s (publish call %s) missed=%d wrong-limit=%d",
		r.SDKs, r.Publishes, r.Latency, r.PublishCall, r.Missed, r.WrongLimit)
}

// PublishToEnforce publishes opt.Publishes versions of doc, each with a different
// limit on opt.Plan/opt.Entitlement, to the SDKs ps already connected to t, and times
// every SDK's switch. One watcher goroutine sweeps all SDKs every opt.PollEvery (a
// tight poll per SDK would starve a 2-core machine); the latencies are therefore late
// by up to PollEvery plus a sweep.
func PublishToEnforce(ctx context.Context, c *http.Client, t Target, ps []*limitr.Policy, doc []byte, opt PublishOptions) (PublishResult, error) {
	r := PublishResult{SDKs: len(ps), Publishes: opt.Publishes}
	var all, calls []time.Duration
	for i := range opt.Publishes {
		limit := float64(600_000 + 10_000*i)
		next, err := WithLimit(doc, opt.Plan, opt.Entitlement, limit)
		if err != nil {
			return r, err
		}
		old := make([]string, len(ps))
		for j, p := range ps {
			old[j] = p.Version()
		}
		// Upload first: the timed part is the publish, which makes the version active.
		var ver struct {
			Number int `json:"number"`
		}
		if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/policies", t.AdminKey, "application/json",
			next, http.StatusCreated, &ver); err != nil {
			return r, err
		}
		seen := make([]time.Duration, len(ps))
		start := time.Now()
		if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/environments/"+t.Environment+"/publish", t.AdminKey,
			"application/json", fmt.Appendf(nil, `{"version":%d}`, ver.Number), http.StatusOK, nil); err != nil {
			return r, err
		}
		calls = append(calls, time.Since(start))
		left := len(ps)
		for left > 0 && time.Since(start) < opt.Timeout {
			for j, p := range ps {
				if seen[j] == 0 && p.Version() != old[j] {
					seen[j] = time.Since(start)
					left--
				}
			}
			if left > 0 {
				time.Sleep(opt.PollEvery)
			}
		}
		var this []time.Duration
		for j, d := range seen {
			if d == 0 {
				r.Missed++
				continue
			}
			this = append(this, d)
			if opt.Customer != "" {
				if got, err := ps[j].Limit(ctx, opt.Customer, opt.Entitlement); err != nil || got != limit {
					r.WrongLimit++
				}
			}
		}
		all = append(all, this...)
		r.PerPublish = append(r.PerPublish, NewDist(this))
		if !sleep(ctx, opt.Gap) {
			return r, ctx.Err()
		}
	}
	r.Latency = NewDist(all)
	r.PublishCall = NewDist(calls)
	return r, nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
