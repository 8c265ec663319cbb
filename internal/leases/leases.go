// Package leases grants allowance leases (fleet mode Exact): a hard limit served by
// several SDK instances is kept exactly by granting each instance, atomically, a share
// of the meter's remaining allowance it then spends locally.
//
// Per meter period (environment, canonical customer, entitlement, period start) the
// server keeps a row per instance in fleet_leases: what it granted the instance
// (cumulative), what the instance said it used, and what the server committed from the
// instance's leased usage batches. With U the meter period's committed usage, a grant
// keeps
//
//	U + Σ_live (granted − committed) + Σ_expired max(0, used − committed) ≤ limit
//
// for every grant computed with that limit: an expired lease's unused part is free
// again, while what it used and has not committed may still arrive. A live grant is
// never taken back (a lowered limit only stops further grants). Grants of one meter
// serialize on a transaction advisory lock; a request takes its meters' locks in one
// order, so requests never deadlock. A leased usage batch moves its units from the
// lease's outstanding part to U in the transaction that commits it (internal/usage).
//
// A customer's spend cap held by the control plane is leased the same way (an ask with
// Cap set to the cap's key and no entitlement): the "meter period" is the cap key's
// period, U what usage batches committed of it (cap_uses, in cap_usage_totals), and
// the limit the cap's ceiling.
package leases

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// DefaultTTL is how long a lease lives without being renewed, by default.
const DefaultTTL = 15 * time.Second

// Service grants and takes back leases.
type Service struct {
	pool    *pgxpool.Pool
	ttl     time.Duration
	metrics *Metrics
	now     func() time.Time
}

// NewService returns the service; ttl <= 0 takes DefaultTTL. metrics may be nil.
func NewService(pool *pgxpool.Pool, ttl time.Duration, metrics *Metrics) *Service {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Service{pool: pool, ttl: ttl, metrics: metrics, now: time.Now}
}

// TTL is how long a lease lives from a request without being renewed.
func (s *Service) TTL() time.Duration { return s.ttl }

// SetClock replaces the service's clock (tests: expiry).
func (s *Service) SetClock(now func() time.Time) { s.now = now }

// Metrics count the grants.
type Metrics struct {
	Grants       *prometheus.CounterVec // by outcome: granted, unchanged, unknown_customer, customer_recreated
	GrantedUnits prometheus.Counter
	Returns      prometheus.Counter
}

// NewMetrics makes the metrics; whoever serves them registers each one.
func NewMetrics() *Metrics {
	return &Metrics{
		Grants: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "limitr_lease_grants_total",
			Help: "Allowance lease asks answered, by outcome (granted: more allowance; unchanged: nothing more; or the error).",
		}, []string{"outcome"}),
		GrantedUnits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "limitr_lease_granted_units_total",
			Help: "Allowance newly granted to SDK instances by leases, in the meters' units (all credits together).",
		}),
		Returns: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "limitr_lease_returns_total",
			Help: "Lease returns (an SDK instance's clean shutdown).",
		}),
	}
}

// Grant grants (or renews) the leases an instance asks for, in one transaction, and
// answers a grant per ask in the asks' order. An ask naming no customer of the
// environment (or an earlier customer of that id) gets Error set and the others
// proceed. An invalid request is a *validation.Error naming every bad field and grants
// nothing.
func (s *Service) Grant(ctx context.Context, env store.Environment, in wire.LeaseRequest) (wire.LeaseReply, error) {
	now := s.now().UTC().Truncate(time.Microsecond)
	v := check(&in, now)
	if err := v.errs.Err(invalidRequest(v.errs.Len())); err != nil {
		return wire.LeaseReply{}, err
	}
	reply := wire.LeaseReply{Leases: make([]wire.LeaseGrant, len(in.Leases)), TTLMillis: s.ttl.Milliseconds()}
	for i, a := range in.Leases {
		reply.Leases[i] = wire.LeaseGrant{Customer: a.Customer, Entitlement: a.Entitlement, Cap: a.Cap, PeriodStart: a.PeriodStart.UTC()}
	}
	fresh := make([]num.Dec, len(in.Leases)) // newly granted, for the metrics
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		found, err := store.ResolveUsageCustomers(ctx, tx, env.TenantID, env.ID, v.names)
		if err != nil {
			return err
		}
		var asks []store.LeaseAsk
		var index []int
		for i := range in.Leases {
			a := &in.Leases[i]
			c, reason := customer(found, a, now)
			if reason != "" {
				g := &reply.Leases[i]
				g.Error, g.Granted, g.Available, g.Committed = reason, "0", "0", "0"
				continue
			}
			asks = append(asks, store.LeaseAsk{LeaseMeter: store.LeaseMeter{CustomerID: c.ID, CustomerUID: c.UID,
				Entitlement: a.Entitlement, CapKey: a.Cap, PeriodStart: a.PeriodStart.UTC()},
				Limit: v.asks[i].limit.String(), Target: v.asks[i].target.String(), Used: v.asks[i].used.String(),
				Need: v.asks[i].need.String()})
			index = append(index, i)
		}
		// One lock order for every request: meters sorted, then ask order.
		order := make([]int, len(asks))
		for k := range order {
			order[k] = k
		}
		sort.SliceStable(order, func(x, y int) bool {
			return store.LeaseMeterLess(asks[order[x]].LeaseMeter, asks[order[y]].LeaseMeter)
		})
		sorted := make([]store.LeaseAsk, len(asks))
		for k, o := range order {
			sorted[k] = asks[o]
		}
		grants, err := store.GrantLeases(ctx, tx, env, in.InstanceID, sorted, now, now.Add(s.ttl))
		if err != nil {
			return err
		}
		for k, g := range grants {
			out := &reply.Leases[index[order[k]]]
			out.Granted, out.Committed, out.Available = g.Granted, g.Committed, g.Available
			out.Remaining, out.Holders = g.Remaining, g.Holders
			fresh[index[order[k]]] = newlyGranted(g)
		}
		return nil
	})
	if err != nil {
		return wire.LeaseReply{}, fmt.Errorf("leases: grant: %w", err)
	}
	s.count(reply, fresh)
	return reply, nil
}

// newlyGranted is what a grant added to the instance's lease (metrics only).
func newlyGranted(g store.LeaseGrant) num.Dec {
	now, err1 := num.Parse(g.Granted)
	prev, err2 := num.Parse(g.Previous)
	if err1 != nil || err2 != nil {
		return num.Zero
	}
	d, err := now.Sub(prev)
	if err != nil || !d.IsPos() {
		return num.Zero
	}
	return d
}

// count records the outcome of every ask.
func (s *Service) count(reply wire.LeaseReply, fresh []num.Dec) {
	if s.metrics == nil {
		return
	}
	for i, g := range reply.Leases {
		switch {
		case g.Error != "":
			s.metrics.Grants.WithLabelValues(g.Error).Inc()
		case fresh[i].IsPos():
			s.metrics.Grants.WithLabelValues("granted").Inc()
			s.metrics.GrantedUnits.Add(num.Float64(fresh[i]))
		default:
			s.metrics.Grants.WithLabelValues("unchanged").Inc()
		}
	}
}

// Return removes every lease an instance holds in the environment: their unused parts
// are free for the fleet at once. The instance's batches must all be acknowledged
// first: usage arriving after its lease is gone only counts as committed usage.
func (s *Service) Return(ctx context.Context, env store.Environment, instanceID string) error {
	if fe := validation.InstanceID(instanceID); fe != nil {
		return validation.New("the lease return is invalid (1 problem)", fe.Path, fe.Message)
	}
	if _, err := store.ReturnLeases(ctx, s.pool, env, instanceID); err != nil {
		return fmt.Errorf("leases: return: %w", err)
	}
	if s.metrics != nil {
		s.metrics.Returns.Inc()
	}
	return nil
}

// customer finds an ask's customer, or says why the ask is not the customer's: the
// name is unknown, or the SDK knew an earlier customer of that id (as usage ingest
// tells them apart).
func customer(found map[string]store.UsageCustomer, a *wire.LeaseAsk, now time.Time) (store.UsageCustomer, string) {
	c, ok := found[a.Customer]
	if !ok {
		return c, wire.ReasonUnknownCustomer
	}
	if a.CustomerCreatedAt != nil && !a.CustomerCreatedAt.IsZero() && a.CustomerCreatedAt.Before(c.CreatedAt.Add(-recreatedTolerance)) {
		return c, wire.ReasonCustomerRecreated
	}
	if a.PeriodStart.Before(now.Add(-usagePeriodWindow)) && a.PeriodStart.Before(c.CreatedAt.Add(-usageClockSkew)) {
		return c, wire.ReasonCustomerRecreated
	}
	return c, ""
}
