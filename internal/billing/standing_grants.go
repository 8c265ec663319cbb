package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/enforcement"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
)

// GrantStanding is the remaining balance of one grant in its current grant
// period.
type GrantStanding struct {
	GrantID, Topup, Credit string
	Balance                num.Dec
	// PeriodStart is the grant period's start (the grant's creation for one that does
	// not reset); PeriodEnd its end (zero: none).
	PeriodStart, PeriodEnd time.Time
}

// grantDraw is what the fleet committed drawing from a grant in one grant period.
type grantDraw struct {
	grant string
	start time.Time
	units num.Dec
}

// loadGrantDraws reads the committed draws of customers, by uid (an incarnation's
// draws are its own).
func loadGrantDraws(ctx context.Context, db store.DBTX, uids []uuid.UUID) (map[uuid.UUID][]grantDraw, error) {
	rows, err := db.Query(ctx, `select customer_uid, grant_id, period_start, units::text from grant_draw_totals
		where customer_uid = any($1)`, pgUUIDs(uids))
	if err != nil {
		return nil, fmt.Errorf("billing: grant draws: %w", err)
	}
	defer rows.Close()
	out := map[uuid.UUID][]grantDraw{}
	for rows.Next() {
		var id uuid.UUID
		var units string
		var d grantDraw
		if err := rows.Scan(&id, &d.grant, &d.start, &units); err != nil {
			return nil, fmt.Errorf("billing: grant draws: %w", err)
		}
		if d.units, err = num.Parse(units); err != nil {
			return nil, fmt.Errorf("billing: grant draw of %s: %w", id, err)
		}
		out[id] = append(out[id], d)
	}
	return out, rows.Err()
}

// grants computes the balances of a customer's grants at now, by the rule the SDKs
// hydrate grants with (sdk/go cloud_hydrate.go, enforcement.ApplyGrantDraws): the
// grants its plan includes for its type (under enforcement.IncludedGrantID, dated at
// the customer's creation) and its purchased topups. A grant that does not reset is
// its value less every committed draw; a resetting one is its value (the topup's
// starting value: add and rollover carry-overs are not counted, as ApplyGrantDraws
// does not count them) less the draws of its current grant period. Expired grants are
// left out.
func grants(p *policies.Policy, sub Subject, c store.Customer, draws []grantDraw, now time.Time) []GrantStanding {
	plan := p.Plan(sub.ResolvedPlan)
	gc := grantCalc{loc: sub.location(p), anchor: sub.Anchor, now: now, draws: draws}
	var out []GrantStanding
	if plan != nil {
		for _, t := range plan.Compiled {
			if t.Included && enforcement.IncludedFor(t, c.Type) {
				if g, ok := gc.grant(t, enforcement.IncludedGrantID(t.Name), t.Name, t.Credit.Name, t.Value, c.CreatedAt); ok {
					out = append(out, g)
				}
			}
		}
	}
	for _, t := range c.Topups {
		value, err := num.Parse(t.Value.String())
		if err != nil || t.GrantID == "" {
			continue
		}
		var ct *policies.CompiledTopup
		if plan != nil {
			ct = plan.CompiledTopup(t.Topup)
		}
		if g, ok := gc.grant(ct, t.GrantID, t.Topup, t.Credit, value, t.AppliedAt); ok {
			out = append(out, g)
		}
	}
	return out
}

// grantCalc computes grant balances of one customer at now.
type grantCalc struct {
	loc    *time.Location
	anchor time.Time
	now    time.Time
	draws  []grantDraw
}

// grant is one grant's standing; ct is its topup's definition (nil: unknown, taken as
// one that neither resets nor expires). ok is false for an expired grant.
func (gc grantCalc) grant(ct *policies.CompiledTopup, id, topup, credit string, value num.Dec, created time.Time) (GrantStanding, bool) {
	// The SDKs date a grant to the millisecond.
	created = time.UnixMilli(created.UnixMilli()).UTC()
	g := GrantStanding{GrantID: id, Topup: topup, Credit: credit, PeriodStart: created}
	resets := ct != nil && !ct.Reset.IsZero()
	if ct != nil && ct.ExpiresAfter > 0 {
		exp := created.Add(ct.ExpiresAfter)
		if !exp.After(gc.now) {
			return g, false
		}
		g.PeriodEnd = exp
	}
	if resets {
		g.PeriodStart, g.PeriodEnd = grantPeriod(ct.Reset.Every, ct, created, gc.now, gc.loc, gc.anchor)
	}
	var c num.Calc
	drawn := num.Zero
	for _, d := range gc.draws {
		if d.grant != id {
			continue
		}
		if diff := d.start.Sub(g.PeriodStart); !resets || (diff > -time.Microsecond && diff < time.Microsecond) {
			drawn = c.Add(drawn, d.units)
		}
	}
	g.Balance = num.Max(num.Zero, c.Sub(value, drawn))
	return g, c.Err == nil
}

// grantPeriod is a resetting grant's current period at now, as the engine rolls it
// (enforcement grant.at and grant.periodStart): on a grid of `every` from its creation,
// or the schedule's period containing now.
func grantPeriod(every time.Duration, ct *policies.CompiledTopup, applied, now time.Time, loc *time.Location, anchor time.Time) (start, end time.Time) {
	if every > 0 {
		start = applied
		if elapsed := now.Sub(applied); elapsed > every {
			start = applied.Add((elapsed - 1) / every * every)
		}
		return start.UTC(), start.Add(every).UTC()
	}
	start = ct.Reset.Schedule.Start(now, loc, anchor)
	return start.UTC(), ct.Reset.NextReset(start, now, loc, anchor).UTC()
}
