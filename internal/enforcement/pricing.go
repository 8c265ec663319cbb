package enforcement

import (
	"github.com/limitr/limitr/internal/billing/rating"
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

var unboundedQuantity = rating.UnboundedQuantity

// priceUnits prices qty units of a credit at a position on its price curve, in runes.
// A credit with an exchange pair is priced through the exchange (pairs take
// precedence over credit prices); a credit with only its own price uses that. ok is
// false when there is no price path.
func priceUnits(p *policies.Policy, c *policies.CompiledCredit, qty, position num.Dec) (num.Dec, bool) {
	v, err := p.Exchange.ToRunes(qty, c.Name, position)
	if err != nil {
		return num.Dec{}, false
	}
	return v, true
}
