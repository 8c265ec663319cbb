package usage

import (
	"context"
	"encoding/json"
	"time"

	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/wire"
)

// statePeriods is how many periods per entitlement (and per grant) State returns.
const statePeriods = 2

// Customers reads customer records (the customers domain).
type Customers interface {
	GetRecord(ctx context.Context, env store.Environment, id string) (store.Customer, error)
}

// State is what an SDK hydrates a customer from: the record the REST API returns
// (resolved by id or alt id), the committed totals of its meters (aggregated or not
// yet), the last two periods per entitlement, newest first, and its grants' committed
// draws. The record carries the customer's voucher with the debits committed against
// it (Voucher.Debited), so a hydrating instance starts from the fleet's balance, and
// its spend caps with the committed use of each key's last two periods (Caps[i].Usage).
// Only this customer's usage counts: a customer deleted and created again under the
// same id starts at zero.
func (s *Service) State(ctx context.Context, env store.Environment, id string) (wire.CustomerState, error) {
	cust, err := s.customers.GetRecord(ctx, env, id)
	if err != nil {
		return wire.CustomerState{}, err
	}
	rec, err := json.Marshal(cust.Customer)
	if err != nil {
		return wire.CustomerState{}, err
	}
	totals, err := store.CommittedTotals(ctx, s.pool, cust.UID, statePeriods)
	if err != nil {
		return wire.CustomerState{}, err
	}
	meters := make(map[string][]wire.MeterTotal, len(totals))
	for _, t := range totals {
		meters[t.Entitlement] = append(meters[t.Entitlement], wire.MeterTotal{Credit: t.Credit, PeriodStart: t.PeriodStart,
			Units: t.Units, Overhead: t.Overhead, Price: t.Price})
	}
	drawTotals, err := store.CommittedGrantDraws(ctx, s.pool, cust.UID, statePeriods)
	if err != nil {
		return wire.CustomerState{}, err
	}
	var draws []wire.GrantDraw
	for _, d := range drawTotals {
		draws = append(draws, wire.GrantDraw{Customer: cust.ID, GrantID: d.GrantID, PeriodStart: d.PeriodStart, Units: d.Units})
	}
	return wire.CustomerState{Customer: rec, Meters: meters, GrantDraws: draws}, nil
}

// UnattributedRecord is a record of a committed batch that could not be attributed to
// a customer, as an operator lists it.
type UnattributedRecord struct {
	ID         int64           `json:"id"`
	InstanceID string          `json:"instance_id"`
	Sequence   int64           `json:"sequence"`
	Kind       string          `json:"kind"`
	Index      int             `json:"index"`
	Customer   string          `json:"customer"`
	Reason     string          `json:"reason"`
	Record     json.RawMessage `json:"record"`
	ReceivedAt time.Time       `json:"received_at"`
}

// Unattributed pages an environment's unattributed records newest first, before an
// exclusive id (0: from the newest).
func (s *Service) Unattributed(ctx context.Context, env store.Environment, before int64, limit int) ([]UnattributedRecord, error) {
	if before <= 0 {
		before = 1<<63 - 1
	}
	rows, err := s.pool.Query(ctx, `select id, instance_id, sequence, kind, index, customer, reason, record, received_at
		from unattributed_usage where tenant_id = $1 and environment_id = $2 and id < $3 order by id desc limit $4`,
		env.TenantID, env.ID, before, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := []UnattributedRecord{}
	for rows.Next() {
		var r UnattributedRecord
		if err := rows.Scan(&r.ID, &r.InstanceID, &r.Sequence, &r.Kind, &r.Index, &r.Customer, &r.Reason, &r.Record, &r.ReceivedAt); err != nil {
			return nil, err
		}
		r.ReceivedAt = r.ReceivedAt.UTC()
		out = append(out, r)
	}
	return out, rows.Err()
}
