package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/analytics/replay"
	"github.com/limitr/limitr/internal/platform/pg"
	"github.com/limitr/limitr/internal/platform/pgtest"
)

const replayTestdata = "../../internal/analytics/replay/testdata/"

// writeCandidate writes the golden replays' policy with edits (old, new pairs).
func writeCandidate(t *testing.T, pairs ...string) string {
	t.Helper()
	b, err := os.ReadFile(replayTestdata + "current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := string(b)
	for i := 0; i < len(pairs); i += 2 {
		if !strings.Contains(src, pairs[i]) {
			t.Fatalf("no %q in the policy", pairs[i])
		}
		src = strings.Replace(src, pairs[i], pairs[i+1], 1)
	}
	path := filepath.Join(t.TempDir(), "draft.yaml")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestSimulateOffline(t *testing.T) {
	draft := writeCandidate(t, "mode: hard, value: 1000,", "mode: hard, value: 850,",
		"value: 500000, resets: true, included: true", "value: 100000, resets: true, included: true")
	args := []string{"simulate", "--policy", replayTestdata + "current.yaml", "--candidate", draft, "--usage", replayTestdata + "usage.csv"}
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{
		"billing periods ending 2026-02-01T00:00:00Z to 2026-03-01T00:00:00Z, in USD",
		"  acme       basic    27.00      30.00   +3.00",
		"  Total (3)           75.00      86.00  +11.00",
		"2 customers reach a hard limit, 2 would be denied usage: images 200 denied",
		"2 customers run out of grants: token 550000 short",
		"beta: images from 2026-02-01T00:00:00Z: 1000 used, hard limit 850, 150 denied",
		"gamma: token grants in the period from 2026-02-01T00:00:00Z: 600000 used, 200000 given, 400000 billed instead",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	stdout.Reset()
	if code := run(append(args, "--json", "--from", "2026-01-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z"), &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var rep replay.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep.Totals.Customers != 3 || rep.Totals.CustomersOutOfGrants != 2 {
		t.Fatalf("%+v %v", rep.Totals, err)
	}

	for _, bad := range [][]string{
		{"simulate", "--policy", replayTestdata + "current.yaml", "--usage", replayTestdata + "usage.csv"},
		{"simulate", "--policy", replayTestdata + "current.yaml", "--candidate", draft, "--usage", replayTestdata + "usage.csv", "--to-version", "2"},
		{"simulate", "--policy", replayTestdata + "current.yaml", "--candidate", draft, "--usage", replayTestdata + "usage.csv", "--from", "2026-01-01T00:00:00Z"},
		{"simulate"},
	} {
		stderr.Reset()
		if code := run(bad, io.Discard, &stderr); code != exitUsage || stderr.Len() == 0 {
			t.Errorf("%v: exit %d, %s", bad, code, stderr.String())
		}
	}
	if code := run([]string{"simulate", "--policy", "testdata/bad-policy.yaml", "--candidate", draft, "--usage", replayTestdata + "usage.csv"},
		io.Discard, &stderr); code != exitFail {
		t.Errorf("a bad policy: exit %d", code)
	}
}

// startDev runs `limitr dev` on a fresh database and returns its URL and a pool.
func startDev(t *testing.T) (string, string) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	ctx, cancel := context.WithCancel(context.Background())
	outR, outW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- dev(ctx, []string{"--addr", "127.0.0.1:0", "--database-url", dbURL, "--operator-token", "op-secret",
			"--poll-interval", "50ms", "--log-level", "warn"}, func(string) string { return "" }, outW, io.Discard)
		outW.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Error("dev did not stop")
		}
	})
	lines := bufio.NewScanner(outR)
	base := ""
	for base == "" && lines.Scan() {
		base, _ = strings.CutPrefix(lines.Text(), "limitr dev: listening on ")
	}
	if base == "" {
		t.Fatal("no URL printed")
	}
	go func() { _, _ = io.Copy(io.Discard, outR) }()
	return base, dbURL
}

func call(t *testing.T, method, url, key, ctype, body string, want int) []byte {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", ctype)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s", method, url, resp.StatusCode, out)
	}
	return out
}

// Against `limitr dev` (API and worker in one process): the simulation is queued,
// run by the worker and printed.
func TestSimulateAgainstTheAPI(t *testing.T) {
	t.Setenv("LIMITR_API_KEY", "") // the no-key case below
	base, dbURL := startDev(t)
	var boot struct {
		Secret string `json:"secret"`
	}
	_ = json.Unmarshal(call(t, "POST", base+"/v1/tenants", "op-secret", "application/json", `{"slug":"acme"}`, 201), &boot)
	key := boot.Secret
	src, err := os.ReadFile(replayTestdata + "current.yaml")
	if err != nil {
		t.Fatal(err)
	}
	call(t, "POST", base+"/v1/policies", key, "application/yaml", string(src), 201)
	call(t, "POST", base+"/v1/environments/production/publish", key, "application/json", `{"version":1}`, 200)
	call(t, "POST", base+"/v1/environments/production/customers", key, "application/json", `{"id":"acme","plan":"basic"}`, 201)
	ctx := context.Background()
	pool, err := pg.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	_, err = pool.Exec(ctx, `with c as (update customers set created_at = '2026-01-01Z', billing_anchor = '2026-01-01Z' where id = 'acme' returning uid, tenant_id, environment_id),
		h as (update customer_plan_history p set effective_at = '2026-01-01Z' from c where p.customer_uid = c.uid)
		insert into meter_aggregates (tenant_id, environment_id, customer_id, customer_uid, entitlement, period_start, credit, units, grant_covered, overhead)
		select tenant_id, environment_id, 'acme', uid, 'tokens', '2026-02-01Z', 'token', 1600000, 250000, 6.4 from c`)
	if err != nil {
		t.Fatal(err)
	}

	draft := writeCandidate(t, "token: { price: { amount: 0.00002 } }", "token: { price: { amount: 0.00003 } }")
	args := []string{"simulate", "--from-version", "1", "--to-file", draft, "--api", base, "--key", key, "--env", "production",
		"--from", "2026-02-01T00:00:00Z", "--to", "2026-03-01T00:00:00Z"}
	var stdout, stderr bytes.Buffer
	if code := run(args, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"Replay of the document " + draft + " against version 1",
		"  acme       basic    27.00      30.50   +3.50  6.40       6.40   20.60      24.10   +3.50"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("no %q in:\n%s", want, stdout.String())
		}
	}
	stdout.Reset()
	if code := run(append(args, "--json"), &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var rep replay.Report
	if err := json.Unmarshal(stdout.Bytes(), &rep); err != nil || rep.Totals.Difference.Revenue != "3.50" || rep.CandidateVersion != nil {
		t.Fatalf("%s %v", stdout.String(), err)
	}

	// The API's refusal is shown with its paths.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	_ = os.WriteFile(bad, []byte("policy:\n  plans:\n    basic:\n      entitlements:\n        x: { limit: { credit: nope, value: 1 } }\n"), 0o644)
	stderr.Reset()
	code := run([]string{"simulate", "--to-file", bad, "--api", base, "--key", key}, io.Discard, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), "policy.plans.basic.entitlements.x.limit.credit") {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	stderr.Reset()
	if code := run([]string{"simulate", "--to-file", draft, "--api", base}, io.Discard, &stderr); code != exitUsage {
		t.Fatalf("no key: exit %d: %s", code, stderr.String())
	}
}
