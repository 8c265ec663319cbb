package enforcement

import (
	"github.com/limitr/limitr/internal/num"
	"github.com/limitr/limitr/internal/policies"
)

// priceUnits prices qty units of a credit at a position on its price curve, in runes.
// A credit priced directly (and without an exchange pair) uses its own price; others
// go through the exchange table. ok is false when there is no price path.
func priceUnits(p *policies.Policy, c *policies.CompiledCredit, qty, position num.Dec) (num.Dec, bool) {
	if qty.IsZero() {
		return num.Zero, true
	}
	factor, priced, ok := resolveExchange(p, c.Name)
	if !ok {
		return num.Dec{}, false
	}
	var calc num.Calc
	if priced == nil {
		return calc.Mul(qty, factor), calc.Err == nil
	}
	out, ok := priceOf(priced, calc.Mul(qty, factor), calc.Mul(position, factor))
	return out, ok && calc.Err == nil
}

// resolveExchange walks name → currency pairs, multiplying values, until it reaches
// runes (priced == nil) or a priced credit without a pair (priced != nil).
func resolveExchange(p *policies.Policy, name string) (factor num.Dec, priced *policies.CompiledCredit, ok bool) {
	var calc num.Calc
	factor = num.One
	cur := name
	for range 64 {
		if cur == "rune" || cur == "usd" {
			return factor, nil, calc.Err == nil
		}
		pair, has := findPair(p, cur)
		if !has {
			if c := p.Credit(cur); c != nil && (c.Price != nil || len(c.Tiers) > 0) {
				return factor, c, calc.Err == nil
			}
			return num.Dec{}, nil, false
		}
		factor = calc.Mul(factor, pair.Value)
		cur = pair.Currency
	}
	return num.Dec{}, nil, false
}

func findPair(p *policies.Policy, name string) (policies.ExchangePair, bool) {
	for _, pr := range p.Doc.Exchange.Pairs {
		if pr.Name == name {
			return pr, true
		}
	}
	return policies.ExchangePair{}, false
}

// priceOf prices qty units starting at position on a credit's own price curve.
func priceOf(c *policies.CompiledCredit, qty, position num.Dec) (num.Dec, bool) {
	var calc num.Calc
	switch c.PricingModel {
	case policies.PricingFlat:
		if c.Price == nil {
			return num.Dec{}, false
		}
		return calc.Mul(qty, c.Price.Amount), calc.Err == nil
	}
	// Tiered, volume and stairstep curves arrive with the credit economics layer.
	return num.Dec{}, false
}
