package billing

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
	"github.com/limitr/limitr/internal/store"
)

// GrantStanding is the remaining balance of one purchased grant in its current grant
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

// grants computes the balances of a customer's purchased topups at now, by the rule
// the SDKs hydrate grants with (sdk/go cloud_hydrate.go, enforcement.ApplyGrantDraws):
// a grant that does not reset is its value less every committed draw; a resetting one
// is its value (the topup's starting value: add and rollover carry-overs are not
// counted, as ApplyGrantDraws does not) less the draws of its current grant period.
// Expired grants are left out. Grants a plan includes are not computed here.
func grants(p *policies.Policy, sub Subject, topups []store.CustomerTopup, draws []grantDraw, now time.Time) []GrantStanding {
	plan := p.Plan(sub.ResolvedPlan)
	loc := sub.location(p)
	var out []GrantStanding
	for _, t := range topups {
		value, err := num.Parse(t.Value.String())
		if err != nil || t.GrantID == "" {
			continue
		}
		var ct *policies.CompiledTopup
		if plan != nil {
			ct = plan.CompiledTopup(t.Topup)
		}
		// The SDKs date a grant to the millisecond.
		applied := time.UnixMilli(t.AppliedAt.UnixMilli()).UTC()
		g := GrantStanding{GrantID: t.GrantID, Topup: t.Topup, Credit: t.Credit, PeriodStart: applied}
		resets := ct != nil && !ct.Reset.IsZero()
		if ct != nil && ct.ExpiresAfter > 0 {
			exp := t.AppliedAt.Add(ct.ExpiresAfter)
			if !exp.After(now) {
				continue
			}
			g.PeriodEnd = exp.UTC()
		}
		if resets {
			g.PeriodStart, g.PeriodEnd = grantPeriod(ct.Reset.Every, ct, applied, now, loc, sub.Anchor)
		}
		var c num.Calc
		drawn := num.Zero
		for _, d := range draws {
			if d.grant != t.GrantID {
				continue
			}
			if diff := d.start.Sub(g.PeriodStart); !resets || (diff > -time.Microsecond && diff < time.Microsecond) {
				drawn = c.Add(drawn, d.units)
			}
		}
		if c.Err != nil {
			continue
		}
		g.Balance = num.Max(num.Zero, c.Sub(value, drawn))
		out = append(out, g)
	}
	return out
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
