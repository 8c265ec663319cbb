package analytics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/aggregate"
	"github.com/limitr/limitr/internal/store"
)

// BookerConfig tunes a Booker; zero values take the defaults.
type BookerConfig struct {
	// Interval is how often the customers aggregation touched are booked (default
	// 250ms): margins trail the aggregates by about this much plus the booking.
	Interval time.Duration
	// SweepInterval is how often every environment is swept for what the touched
	// customers do not cover: reprices after a publish or an override, levels and
	// plan fees of a new billing period, topups, and anything missed after a crash
	// (default 5m).
	SweepInterval time.Duration
	// ChunkSize is the most customers booked in one transaction (default 1000).
	ChunkSize int
	// MaxPending bounds the customers waiting to be booked; past it OnBatch drops the
	// batch and the next sweep books them (default 100,000).
	MaxPending int
	Logger     *slog.Logger
	// Metrics, when set, count bookings and their lag.
	Metrics *Metrics
}

func (c *BookerConfig) defaults() {
	if c.Interval <= 0 {
		c.Interval = 250 * time.Millisecond
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = 5 * time.Minute
	}
	if c.ChunkSize <= 0 {
		c.ChunkSize = 1000
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 100_000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// Booker keeps the rollups: it books the customers each aggregation batch touched,
// off the aggregation transaction, and sweeps periodically.
type Booker struct {
	svc *Service
	cfg BookerConfig

	mu      sync.Mutex
	pending map[uuid.UUID]map[uuid.UUID]bool // environment → customer uids
	count   int
	dropped bool
}

// NewBooker returns a Booker; Run starts it.
func (s *Service) NewBooker(cfg BookerConfig) *Booker {
	cfg.defaults()
	return &Booker{svc: s, cfg: cfg, pending: map[uuid.UUID]map[uuid.UUID]bool{}}
}

// OnBatch queues a committed batch's customers; it never blocks (for
// aggregate.Options.OnBatch).
func (b *Booker) OnBatch(batch aggregate.Batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, t := range batch.Touched {
		if b.count >= b.cfg.MaxPending {
			b.dropped = true
			return
		}
		set := b.pending[t.EnvironmentID]
		if set == nil {
			set = map[uuid.UUID]bool{}
			b.pending[t.EnvironmentID] = set
		}
		if !set[t.CustomerUID] {
			set[t.CustomerUID] = true
			b.count++
		}
	}
}

// Run books queued customers every Interval and sweeps at start and every
// SweepInterval until ctx ends; it returns nil then. Errors are logged: bookings are
// differences against what was booked, so the next pass repairs what one missed.
func (b *Booker) Run(ctx context.Context) error {
	b.logErr(ctx, "sweep", b.Sweep(ctx))
	tick := time.NewTicker(b.cfg.Interval)
	defer tick.Stop()
	var sweep <-chan time.Time
	if b.cfg.SweepInterval > 0 {
		t := time.NewTicker(b.cfg.SweepInterval)
		defer t.Stop()
		sweep = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			b.logErr(ctx, "booking", b.Flush(ctx))
		case <-sweep:
			b.logErr(ctx, "sweep", b.Sweep(ctx))
		}
	}
}

func (b *Booker) logErr(ctx context.Context, what string, err error) {
	if err != nil && ctx.Err() == nil {
		b.cfg.Logger.Warn("analytics: "+what+" failed; the next pass retries", "err", err)
	}
}

// Flush books the queued customers now.
func (b *Booker) Flush(ctx context.Context) error {
	b.mu.Lock()
	pending, dropped := b.pending, b.dropped
	b.pending, b.count, b.dropped = map[uuid.UUID]map[uuid.UUID]bool{}, 0, false
	b.mu.Unlock()
	if dropped {
		b.cfg.Logger.Info("analytics: the booking queue overflowed; sweeping")
		return b.Sweep(ctx)
	}
	if len(pending) == 0 {
		return nil
	}
	envs, err := b.svc.environments(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for id, set := range pending {
		env, ok := envs[id]
		if !ok {
			continue // no active policy: nothing is billed there
		}
		uids := make([]uuid.UUID, 0, len(set))
		for uid := range set {
			uids = append(uids, uid)
		}
		if err := b.book(ctx, env, uids); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

func (b *Booker) book(ctx context.Context, env store.Environment, uids []uuid.UUID) error {
	slices.SortFunc(uids, func(x, y uuid.UUID) int { return slices.Compare(x[:], y[:]) })
	for chunk := range slices.Chunk(uids, b.cfg.ChunkSize) {
		booked, err := b.svc.Book(ctx, env, chunk)
		if err != nil {
			return err
		}
		if m := b.cfg.Metrics; m != nil {
			now := time.Now()
			m.Changes.Add(float64(booked.Changes))
			for _, at := range booked.Aggregated {
				m.Lag.Observe(max(now.Sub(at), 0).Seconds())
			}
		}
	}
	return nil
}

// Sweep books, in every environment with an active policy, every customer whose
// booked figures may be stale, and the topups not booked yet.
func (b *Booker) Sweep(ctx context.Context) error {
	envs, err := b.svc.environments(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, env := range envs {
		uids, err := b.svc.stale(ctx, env)
		if err == nil {
			err = b.book(ctx, env, uids)
		}
		if err == nil {
			_, err = b.svc.BookTopups(ctx, env)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", env.ID, err))
		}
	}
	return errors.Join(errs...)
}

// environments are those with an active policy (billing's), by id.
func (s *Service) environments(ctx context.Context) (map[uuid.UUID]store.Environment, error) {
	list, err := s.valuer.Environments(ctx)
	if err != nil {
		return nil, fmt.Errorf("analytics: %w", err)
	}
	out := make(map[uuid.UUID]store.Environment, len(list))
	for _, e := range list {
		out[e.ID] = e
	}
	return out, nil
}

// stale lists the customers of env whose booked figures may differ from what they
// are worth now: a meter period committed since (or never booked), an open meter
// period priced with an older version, a customer changed lately (plan, overrides),
// a level or a plan fee whose billing period has turned, and every customer on a
// test clock (whose time moves apart from ours).
func (s *Service) stale(ctx context.Context, env store.Environment) ([]uuid.UUID, error) {
	now := s.now()
	rows, err := s.pool.Query(ctx, `
		select m.customer_uid from meter_aggregates m
		left join lateral (select a.units, a.grant_covered, a.calls from analytics_meters a
			where a.customer_uid = m.customer_uid and a.entitlement = m.entitlement and a.period_start = m.period_start
			order by a.bill_start desc limit 1) a on true
		where m.tenant_id = $1 and m.environment_id = $2 and m.period_start > $3
		  and (a.units is null or a.units <> m.units or a.grant_covered <> m.grant_covered or a.calls <> m.calls)
		union
		select customer_uid from analytics_meters
		where environment_id = $2 and bill_end > $4
		  and version <> (select v.number from environment_policies p join policy_versions v on v.tenant_id = p.tenant_id and v.id = p.version_id
		                  where p.tenant_id = $1 and p.environment_id = $2)
		union
		select a.customer_uid from analytics_meters a
		where a.environment_id = $2 and a.level and a.bill_end <= $4
		  and not exists (select 1 from analytics_meters b where b.customer_uid = a.customer_uid and b.entitlement = a.entitlement
		                  and b.period_start = a.period_start and b.bill_end > $4)
		union
		select c.uid from customers c
		where c.tenant_id = $1 and c.environment_id = $2
		  and (c.updated_at > $5 or c.test_clock_id is not null
		       or (c.plan <> '' and not exists (select 1 from analytics_fees f where f.customer_uid = c.uid and f.bill_end > $4)))`,
		env.TenantID, env.ID, now.AddDate(0, 0, -400), now, now.Add(-2*time.Hour))
	if err != nil {
		return nil, fmt.Errorf("analytics: stale customers: %w", err)
	}
	uids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("analytics: stale customers: %w", err)
	}
	return uids, nil
}
