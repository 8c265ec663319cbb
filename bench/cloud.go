package bench

// Cloud-sync benchmarks (issue 5): the control plane with its aggregation worker in
// this process (StartStack), and four scenarios on it: usage ingest against raw COPY
// (ingest.go), publish-to-enforce latency over connected SDKs (publish.go),
// aggregation lag at a fixed ingest rate (lag.go) and the fleet overshoot of a hard
// limit (overshoot.go). bench/cloudload is the command; bench/README.md has figures.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/api"
	"github.com/limitr/limitr/internal/partitions"
	"github.com/limitr/limitr/internal/platform/bus"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/secrets"
	"github.com/limitr/limitr/internal/wire"
	"github.com/limitr/limitr/internal/worker"
)

// StackConfig describes the API and, optionally, the aggregation worker run in this
// process the way `limitr dev` runs them: one pool, one wake-up bus (in-process, or
// Redis pub/sub when RedisURL is set), daily usage partitions maintained.
type StackConfig struct {
	DatabaseURL   string
	RedisURL      string // empty: in-process bus, limiter and fan-out
	OperatorToken string
	RateLimit     int       // per minute per key; set it far above the load
	Log           io.Writer // JSON request log and worker log (nil: discarded)
	// Worker runs the aggregation loop (aggregate.Run) next to the API.
	Worker          bool
	WorkerBatchSize int           // 0: aggregate.DefaultBatchSize
	PollInterval    time.Duration // 0: 1s, as cmd/worker
	// WorkerPolls runs the worker without wake-ups: it only polls, as it does while the
	// bus (Redis) is down.
	WorkerPolls bool
	// OnBatch sees every committed aggregation batch (its per-row commit lags).
	OnBatch func(aggregate.Batch)
	// Secrets seals alert channel secrets (nil: an ephemeral keyring, which refuses
	// them); SlackAPIURL is where Slack deliveries go.
	Secrets     *secrets.Keyring
	SlackAPIURL string
}

// Stack is a running API (and worker) on 127.0.0.1.
type Stack struct {
	URL   string
	Pool  *pgxpool.Pool // the stack's own pool, for checks and the COPY baseline
	Bus   bus.Bus       // the wake-up bus the API and the worker share
	close func() error
}

// Close stops the worker and the API.
func (s *Stack) Close() error { return s.close() }

// StartStack starts the API and, with cfg.Worker, the aggregation worker. The schema
// must be migrated.
func StartStack(ctx context.Context, cfg StackConfig) (*Stack, error) {
	pool, err := pg.Connect(ctx, cfg.DatabaseURL)
	if err != nil {
		return nil, err
	}
	logOut := cfg.Log
	if logOut == nil {
		logOut = io.Discard
	}
	logger := slog.New(slog.NewJSONHandler(logOut, nil))
	var rdb redis.UniversalClient
	var wake bus.Bus = bus.NewMemory()
	if cfg.RedisURL != "" {
		client, err := bus.NewRedisClient(cfg.RedisURL)
		if err != nil {
			pool.Close()
			return nil, err
		}
		rdb = client
		if err := rdb.Ping(ctx).Err(); err != nil {
			pool.Close()
			rdb.Close()
			return nil, fmt.Errorf("redis: %w", err)
		}
		wake = bus.NewRedis(rdb, logger)
	}
	srv, err := api.New(api.Config{OperatorToken: cfg.OperatorToken, RateLimit: cfg.RateLimit, RatePer: time.Minute},
		api.Deps{Pool: pool, Redis: rdb, Logger: logger, Bus: wake, Secrets: cfg.Secrets, SlackAPIURL: cfg.SlackAPIURL,
			AllowPrivateAlertDestinations: true})
	if err != nil {
		pool.Close()
		if rdb != nil {
			rdb.Close()
		}
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		pool.Close()
		return nil, err
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	hs.RegisterOnShutdown(func() { _ = srv.Close() }) // ends push streams
	go func() { _ = hs.Serve(ln) }()

	// Partitions are made ahead as the worker does at start, so the runs' usage lands in
	// its day's partition whether or not a worker runs.
	if _, err := partitions.Ensure(ctx, pool, time.Now(), partitions.DaysAhead, logger); err != nil {
		_ = hs.Close()
		srv.Close()
		pool.Close()
		return nil, err
	}
	jobsCtx, stopJobs := context.WithCancel(context.WithoutCancel(ctx))
	var jobs sync.WaitGroup
	if cfg.Worker {
		// The worker as production composes it (internal/worker).
		workerBus := wake
		if cfg.WorkerPolls {
			workerBus = nil
		}
		w, err := worker.New(worker.Deps{Pool: pool, Bus: workerBus, Logger: logger, Secrets: cfg.Secrets, SlackAPIURL: cfg.SlackAPIURL,
			AllowPrivateAlertDestinations: true}, worker.Config{BatchSize: cfg.WorkerBatchSize,
			PollInterval: cfg.PollInterval, OnBatch: cfg.OnBatch})
		if err != nil {
			stopJobs()
			_ = hs.Close()
			srv.Close()
			pool.Close()
			return nil, err
		}
		jobs.Go(func() { _ = w.Run(jobsCtx) })
	}
	return &Stack{URL: "http://" + ln.Addr().String(), Pool: pool, Bus: wake, close: func() error {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := hs.Shutdown(sctx)
		stopJobs()
		jobs.Wait()
		srv.Close()
		pool.Close()
		if rdb != nil {
			rdb.Close()
		}
		return err
	}}, nil
}

// TargetIDs returns the tenant id and the id of the target's environment.
func TargetIDs(ctx context.Context, c *http.Client, t Target) (tenantID, envID string, err error) {
	var ten struct {
		ID string `json:"id"`
	}
	if err := call(ctx, c, http.MethodGet, t.BaseURL+"/v1/tenant", t.AdminKey, "", nil, http.StatusOK, &ten); err != nil {
		return "", "", err
	}
	var envs struct {
		Data []struct {
			ID   string `json:"id"`
			Name string `json:"name"`
		} `json:"data"`
	}
	if err := call(ctx, c, http.MethodGet, t.BaseURL+"/v1/environments", t.AdminKey, "", nil, http.StatusOK, &envs); err != nil {
		return "", "", err
	}
	for _, e := range envs.Data {
		if e.Name == t.Environment {
			return ten.ID, e.ID, nil
		}
	}
	return "", "", fmt.Errorf("environment %q not listed", t.Environment)
}

// AddCustomers creates customers with the given ids on plan ("" = the default plan)
// through the API, with the SDK key, from workers concurrent requests.
func AddCustomers(ctx context.Context, c *http.Client, t Target, ids []string, plan string, workers int) error {
	u := t.BaseURL + "/v1/environments/" + url.PathEscape(t.Environment) + "/customers"
	workers = max(1, min(workers, len(ids)))
	next := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for id := range next {
				body := map[string]any{"id": id}
				if plan != "" {
					body["plan"] = plan
				}
				b, _ := json.Marshal(body)
				if err := call(ctx, c, http.MethodPost, u, t.SDKKey, "application/json", b, http.StatusCreated, nil); err != nil {
					errs <- fmt.Errorf("create customer %s: %w", id, err)
					return
				}
			}
		})
	}
	var err error
feed:
	for _, id := range ids {
		select {
		case next <- id:
		case err = <-errs:
			break feed
		}
	}
	close(next)
	wg.Wait()
	if err == nil {
		select {
		case err = <-errs:
		default:
		}
	}
	return err
}

// PublishPolicy uploads doc as a new version and publishes it to the target's
// environment; it returns the version number.
func PublishPolicy(ctx context.Context, c *http.Client, t Target, doc []byte) (int, error) {
	var ver struct {
		Number int `json:"number"`
	}
	if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/policies", t.AdminKey, "application/json",
		doc, http.StatusCreated, &ver); err != nil {
		return 0, fmt.Errorf("create policy: %w", err)
	}
	if err := call(ctx, c, http.MethodPost, t.BaseURL+"/v1/environments/"+url.PathEscape(t.Environment)+"/publish", t.AdminKey,
		"application/json", fmt.Appendf(nil, `{"version":%d}`, ver.Number), http.StatusOK, nil); err != nil {
		return 0, fmt.Errorf("publish policy: %w", err)
	}
	return ver.Number, nil
}

// CustomerState reads a customer's committed usage (aggregated plus not yet
// aggregated) the way the SDK hydrates it: GET /v1/sdk/customers/{id}/state.
func CustomerState(ctx context.Context, c *http.Client, t Target, id string) (wire.CustomerState, error) {
	var st wire.CustomerState
	err := call(ctx, c, http.MethodGet, t.BaseURL+wire.PathCustomer+url.PathEscape(id)+"/state", t.SDKKey, "", nil, http.StatusOK, &st)
	return st, err
}

// WithLimit returns the policy document doc with plans.<plan>.entitlements.<ent>.limit.value
// set to value.
func WithLimit(doc []byte, plan, ent string, value float64) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, err
	}
	root := m
	if p, ok := m["policy"].(map[string]any); ok {
		root = p
	}
	path := []string{"plans", plan, "entitlements", ent, "limit"}
	cur := root
	for _, k := range path {
		next, ok := cur[k].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("policy has no %v", path)
		}
		cur = next
	}
	cur["value"] = value
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Dist summarises a sample of durations.
type Dist struct {
	N                  int
	P50, P90, P99, Max time.Duration
}

// NewDist sorts d (in place) and takes its percentiles (nearest rank).
func NewDist(d []time.Duration) Dist {
	if len(d) == 0 {
		return Dist{}
	}
	slices.Sort(d)
	q := func(p float64) time.Duration {
		i := int(p*float64(len(d))+0.999999) - 1
		return d[max(0, min(len(d)-1, i))]
	}
	return Dist{N: len(d), P50: q(0.50), P90: q(0.90), P99: q(0.99), Max: d[len(d)-1]}
}

func (d Dist) String() string {
	return fmt.Sprintf("n=%d p50=%s p90=%s p99=%s max=%s", d.N, ms(d.P50), ms(d.P90), ms(d.P99), ms(d.Max))
}
