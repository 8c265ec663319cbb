package customers

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
	"github.com/limitr/limitr/internal/validation"
	"github.com/limitr/limitr/internal/wire"
)

// topupCurrency is what topup prices are recorded in: policy prices are in runes
// (1 rune = 1 USD unless the exchange says otherwise).
const topupCurrency = "rune"

// ApplyTopup grants a topup of the customer's plan, recording its price (the input's,
// else the topup's own) and who applied it. Every SDK instance creates the grant
// under the returned grant id.
func (s *Service) ApplyTopup(ctx context.Context, env store.Environment, id string, in TopupInput) (wire.CustomerTopup, error) {
	price, err := in.prepare()
	if err != nil {
		return wire.CustomerTopup{}, err
	}
	p, err := s.policy(ctx, env)
	if err != nil {
		return wire.CustomerTopup{}, err
	}
	var out wire.CustomerTopup
	err = s.mutation(ctx, env, func(tx pgx.Tx) (*change, error) {
		cust, err := s.load(ctx, tx, p, env, id, true)
		if err != nil {
			return nil, err
		}
		var t *policies.CompiledTopup
		if plan := p.Plan(cust.ResolvedPlan); plan != nil {
			t = plan.CompiledTopup(in.Topup)
		}
		if t == nil {
			return nil, validation.New("invalid topup", "topup", fmt.Sprintf("%q is not a topup of the customer's plan %q", in.Topup, cust.ResolvedPlan))
		}
		rec := store.CustomerTopup{Topup: t.Name, GrantID: enforcement.NewGrantID(), Credit: t.Credit.Name,
			Value: json.Number(t.Value.String()), Currency: topupCurrency}
		if by := store.ActorFrom(ctx).KeyID; by != nil {
			rec.AppliedBy = by.String()
		}
		switch {
		case price != nil:
			rec.Price = json.Number(price.String())
		case t.PriceAmount != nil:
			rec.Price = json.Number(t.PriceAmount.String())
		}
		if err := store.InsertTopup(ctx, tx, env.TenantID, env.ID, cust.ID, &rec); err != nil {
			return nil, err
		}
		after, err := s.touch(ctx, tx, p, env, cust.ID)
		if err != nil {
			return nil, err
		}
		if s.biller != nil {
			if err := s.biller.InvoiceTopup(ctx, tx, env, after, rec); err != nil {
				return nil, err
			}
		}
		out = rec
		feed := feedOf(opTopup, after)
		feed.Topup, _ = json.Marshal(rec)
		return &change{subject: cust.ID, action: "customer.topup", after: rec, feed: feed}, nil
	})
	return out, err
}
