package enforcement

import (
	"fmt"

	"github.com/limitr/limitr/internal/billing/rating"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// RateOverage prices one meter period the way margins and invoices do: the usage past the
// limit at the credit's price from the first billable unit (revenue), and the part of it
// grants paid for (granted units priced from position 0, never more than revenue).
//
// It is the one rating rule for a period's overage: CustomerMarginSnapshot and
// MarginSnapshot use it with the meter's local grant coverage, and the control plane uses
// it with the committed sums (meter_aggregates: units and grant_covered), so a margin and
// the invoice for the same usage agree to the unit.
//
//   - Included units are free: only usage − limit is billed, from billable position 0.
//     Usage grants paid for still counts as revenue (it was sold); grantCovered is the
//     part of revenue the grants settled instead of an invoice.
//   - The price is the credit's own curve (flat, tiered, volume, stairstep) when it has
//     one. A credit without a price of its own is priced through the policy's exchange
//     table, so an abstract credit such as 1 ai_credit = 1.25 rune earns 1.25 a unit.
//     Limitr's margins give such a credit no revenue; that is a deliberate difference.
//   - Nothing to price (usage at or under the limit) is 0, 0 and no error, whatever the
//     credit. A credit with neither its own price nor an exchange path returns zeros and
//     an error wrapping rating.ErrNoPrice; margins count that as no revenue. Arithmetic
//     that leaves the decimal range returns an error wrapping num.ErrOutOfRange: a bill
//     must not silently read 0.
func RateOverage(p *policies.Policy, credit *policies.CompiledCredit, usage, limit, granted num.Dec) (revenue, grantCovered num.Dec, err error) {
	var c num.Calc
	over := c.Sub(usage, limit)
	if c.Err != nil {
		return num.Zero, num.Zero, fmt.Errorf("rate overage: usage %s past limit %s: %w", usage, limit, c.Err)
	}
	if !over.IsPos() {
		// Grants cannot have paid for more than was billed, and nothing was.
		return num.Zero, num.Zero, nil
	}
	if revenue, err = priceFromZero(p, credit, over); err != nil {
		return num.Zero, num.Zero, err
	}
	if !granted.IsPos() {
		return revenue, num.Zero, nil
	}
	covered, err := priceFromZero(p, credit, granted)
	if err != nil {
		return num.Zero, num.Zero, err
	}
	// Coverage is priced from position 0 like revenue, and capped by it: an invoice never
	// credits more than it bills, even when grants covered more units than are past the
	// limit now (usage decremented since) or a volume curve prices fewer units higher.
	return revenue, num.Max(num.Zero, num.Min(covered, revenue)), nil
}

// priceFromZero prices qty units of credit from billable position 0: on the credit's own
// curve, else through the exchange table.
func priceFromZero(p *policies.Policy, credit *policies.CompiledCredit, qty num.Dec) (num.Dec, error) {
	if credit == nil || credit.Credit == nil {
		return num.Zero, fmt.Errorf("rate overage: no credit: %w", rating.ErrNoPrice)
	}
	if credit.Curve != nil {
		v, err := credit.Curve.PriceOf(qty, num.Zero)
		if err != nil {
			return num.Zero, fmt.Errorf("rate overage: %s %s on its price: %w", qty, credit.Name, err)
		}
		return v, nil
	}
	if p == nil || p.Exchange == nil {
		return num.Zero, fmt.Errorf("rate overage: credit %q has no price and there is no exchange table: %w", credit.Name, rating.ErrNoPrice)
	}
	v, err := p.Exchange.ToRunes(qty, credit.Name, num.Zero)
	if err != nil {
		return num.Zero, fmt.Errorf("rate overage: %s %s through the exchange: %w", qty, credit.Name, err)
	}
	return v, nil
}
