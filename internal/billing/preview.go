package billing

// Preview rates in and returns the invoice as the API shows an upcoming one: a period
// invoice, not stored, with no number, its lines in the server's order and its totals
// summed from the rounded lines. The CLI's `limitr invoice preview` uses it, so an
// offline preview and the server cannot disagree.
func Preview(in RatingInput) (Invoice, error) {
	rated, err := Rate(in)
	if err != nil {
		return Invoice{}, err
	}
	inv := Invoice{Kind: "period", Customer: in.Customer.ID, Status: StatusUpcoming, Currency: in.Currency,
		PeriodStart: in.Period.Start.UTC(), PeriodEnd: in.Period.End.UTC()}
	inv.setLines(rated, in.Currency)
	return inv, nil
}
