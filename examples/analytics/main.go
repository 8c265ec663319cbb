// Command analytics is the analytics part of `make demo`: the margins of the
// environment's customers, as the worker booked them from the usage the application
// committed (revenue as invoiced, cost, margin, worst margin first), then a what-if:
// the active policy with every credit 25 % dearer, saved as a new version (not
// published) and replayed over this month's usage next to the active one.
//
// scripts/demo.sh runs it after examples/cloud with:
//
//	LIMITR_BASE_URL    the API, e.g. http://127.0.0.1:8080
//	LIMITR_ADMIN_KEY   an admin key
//	LIMITR_ENVIRONMENT the environment (default production)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"time"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, "analytics demo:", err)
		os.Exit(1)
	}
}

type client struct{ base, key, env string }

type figures struct {
	Revenue             string  `json:"revenue"`
	GrantCoveredRevenue string  `json:"grant_covered_revenue"`
	Cost                string  `json:"cost"`
	Margin              string  `json:"margin"`
	MarginPercent       *string `json:"margin_percent"`
	Calls               int64   `json:"calls"`
}

type margins struct {
	Currency string  `json:"currency"`
	Totals   figures `json:"totals"`
	Groups   []struct {
		Key    string  `json:"key"`
		Totals figures `json:"totals"`
	} `json:"groups"`
}

type replayFigures struct{ Revenue, Cost, Margin string }

type simulation struct {
	ID     string `json:"id"`
	Status string `json:"status"`
	Error  string `json:"error"`
	Result *struct {
		Totals struct {
			Customers  int           `json:"customers"`
			Current    replayFigures `json:"current"`
			Candidate  replayFigures `json:"candidate"`
			Difference replayFigures `json:"difference"`
		} `json:"totals"`
		Customers []struct {
			Customer   string        `json:"customer"`
			Difference replayFigures `json:"difference"`
		} `json:"customers"`
	} `json:"result"`
}

func run(ctx context.Context) error {
	c := client{base: os.Getenv("LIMITR_BASE_URL"), key: os.Getenv("LIMITR_ADMIN_KEY"), env: os.Getenv("LIMITR_ENVIRONMENT")}
	if c.base == "" || c.key == "" {
		return errors.New("set LIMITR_BASE_URL and LIMITR_ADMIN_KEY")
	}
	if c.env == "" {
		c.env = "production"
	}
	envPath := "/v1/environments/" + c.env
	fmt.Printf("1. Margins of the last 30 days (GET %s/analytics/margins): worst margin first\n", envPath)
	var m margins
	deadline := time.Now().Add(15 * time.Second)
	for { // the worker books the usage within a second of aggregating it
		if err := c.do(ctx, http.MethodGet, envPath+"/analytics/margins", nil, http.StatusOK, &m); err != nil {
			return err
		}
		if len(m.Groups) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(m.Groups) == 0 {
		return errors.New("no customer was booked within 15 s")
	}
	fmt.Printf("   %-16s %10s %10s %10s %8s %8s\n", "customer", "revenue", "grants", "cost", "margin", "calls")
	for _, g := range m.Groups {
		fmt.Printf("   %-16s %10s %10s %10s %8s %8d\n", g.Key, g.Totals.Revenue, g.Totals.GrantCoveredRevenue, g.Totals.Cost, pct(g.Totals.MarginPercent), g.Totals.Calls)
	}
	fmt.Printf("   %-16s %10s %10s %10s %8s %8d   (%s; revenue as invoiced, by billing's own rating)\n",
		"total", m.Totals.Revenue, m.Totals.GrantCoveredRevenue, m.Totals.Cost, pct(m.Totals.MarginPercent), m.Totals.Calls, m.Currency)

	fmt.Println()
	fmt.Println("2. What if every credit cost 25 % more? The active policy, repriced, saved as a new version (not published)")
	var doc map[string]any
	if err := c.do(ctx, http.MethodGet, envPath+"/policy", nil, http.StatusOK, &doc); err != nil {
		return err
	}
	n, err := reprice(doc, big.NewRat(5, 4))
	if err != nil {
		return err
	}
	var created struct {
		Number int `json:"number"`
	}
	if err := c.do(ctx, http.MethodPost, "/v1/policies", doc, http.StatusCreated, &created); err != nil {
		return err
	}
	fmt.Printf("   %d prices raised; POST /v1/policies → version %d\n", n, created.Number)
	now := time.Now().UTC()
	var sim simulation
	in := map[string]any{"version": created.Number, "from": now.AddDate(0, 0, -31).Format(time.RFC3339), "to": now.Add(time.Minute).Format(time.RFC3339)}
	if err := c.do(ctx, http.MethodPost, envPath+"/simulations", in, http.StatusAccepted, &sim); err != nil {
		return err
	}
	fmt.Printf("   POST %s/simulations {\"version\": %d, window: this month so far} → %s, %s\n", envPath, created.Number, sim.ID[:8]+"…", sim.Status)
	for deadline := time.Now().Add(30 * time.Second); sim.Status == "queued" || sim.Status == "running"; {
		if time.Now().After(deadline) {
			return errors.New("the simulation did not finish within 30 s")
		}
		time.Sleep(100 * time.Millisecond)
		if err := c.do(ctx, http.MethodGet, envPath+"/simulations/"+sim.ID, nil, http.StatusOK, &sim); err != nil {
			return err
		}
	}
	if sim.Status != "succeeded" || sim.Result == nil {
		return fmt.Errorf("simulation %s: %s", sim.Status, sim.Error)
	}
	t := sim.Result.Totals
	fmt.Printf("   %d customers replayed:   revenue %s → %s (%s), margin %s → %s (%s)\n", t.Customers,
		t.Current.Revenue, t.Candidate.Revenue, t.Difference.Revenue, t.Current.Margin, t.Candidate.Margin, t.Difference.Margin)
	for _, cr := range sim.Result.Customers {
		if cr.Difference.Revenue != "0.00" {
			fmt.Printf("   %-16s revenue %s\n", cr.Customer, cr.Difference.Revenue)
		}
	}
	return nil
}

// reprice multiplies every credit's price amount by f, in place, and counts them.
func reprice(doc map[string]any, f *big.Rat) (int, error) {
	pol, _ := doc["policy"].(map[string]any)
	credits, _ := pol["credits"].(map[string]any)
	n := 0
	for name, c := range credits {
		cm, _ := c.(map[string]any)
		price, _ := cm["price"].(map[string]any)
		amount, ok := price["amount"].(json.Number)
		if !ok {
			continue
		}
		r, ok := new(big.Rat).SetString(amount.String())
		if !ok {
			return 0, fmt.Errorf("credit %s: price %q", name, amount)
		}
		price["amount"] = json.Number(new(big.Rat).Mul(r, f).FloatString(12))
		n++
	}
	if n == 0 {
		return 0, errors.New("the active policy prices no credit")
	}
	return n, nil
}

func pct(p *string) string {
	if p == nil {
		return "—"
	}
	return *p + "%"
}

func (c client) do(ctx context.Context, method, path string, body any, want int, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return err
	}
	if res.StatusCode != want {
		return fmt.Errorf("%s %s: %d %s", method, path, res.StatusCode, bytes.TrimSpace(data))
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	return dec.Decode(out)
}
