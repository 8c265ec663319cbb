package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-no-such-flag"},
		{"-scenario", "ingest,nap"},
		{"-issue-interval", "soon"},
		{"-fleet-configs", "1s"},
		{"-fleet-target", "budget"},
		{"-database-url", ""},
		{"stray"},
	} {
		var out, errOut bytes.Buffer
		t.Setenv("LIMITR_BENCH_DATABASE_URL", "")
		if args[0] == "-database-url" {
			t.Setenv("LIMITR_TEST_DATABASE_URL", "")
		}
		if code := runContext(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("cloudload %q = %d, want 2; stderr %s", args, code, errOut.String())
		}
	}
}

// Each scenario runs end to end in miniature (in-process API and worker, a fresh
// database each), so that `go run ./bench/cloudload` keeps working and the figures in
// bench/README.md stay reproducible. Budgets are not checked: only that every unit
// arrives, once, and the output has its figures.
func TestScenarios(t *testing.T) {
	if os.Getenv("LIMITR_TEST_DATABASE_URL") == "" {
		t.Skip("LIMITR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/services.sh)\"`")
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"ingest", []string{"-senders", "2", "-batches", "3", "-batch-size", "200", "-customers", "100"},
			[]string{"deltas=1200: API ", "API/COPY = ", "one COPY "}},
		{"publish", []string{"-sdks", "5", "-publishes", "2", "-gap", "50ms"},
			[]string{"publish-to-enforce sdks=5 publishes=2: n=10 ", "missed=0 wrong-limit=0"}},
		{"lag", []string{"-rate", "2000", "-duration", "1s", "-lag-senders", "4", "-interval", "250ms", "-customers", "100",
			"-idle-batches", "8", "-issue-rate", "600", "-issue-duration", "1s", "-issue-customers", "50"},
			[]string{"the worker ran 8 batches on the empty table; wake-ups true", "issue shape: aggregation lag at 600 deltas/s",
				"3 senders × 40-delta batches, 50 customers, 100 meters, 600 rows", "20k/s: aggregation lag at 2000 deltas/s",
				"aggregated_at − received_at  n=2000 ", "backlog: at most "}},
		{"sustained", []string{"-customers", "20", "-idle-batches", "8", "-issue-rate", "300", "-sustained", "1s"},
			[]string{"sustained: aggregation lag at 300 deltas/s", "20 customers, 40 meters, 300 rows", "after the last POST"}},
		{"river", []string{"-river-duration", "500ms"},
			[]string{"river: 20 jobs/s (fetch cooldown default), 10 jobs: commit → job start p50 ", "river: 200 jobs/s (fetch cooldown 5ms), 100 jobs"}},
		{"overshoot", []string{"-limit", "300", "-fleet-rate", "500", "-fleet-configs", "50ms/50ms", "-fleet-mode", "both", "-fleet-target", "both", "-check"},
			[]string{"overshoot exact N=3 L=300", "overshoot 0 (budget 0)", "overshoot bounded N=3 L=300 F=50ms R=50ms", "bound min(",
				"a shared org cap of L runes, one member per instance): admitted"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			args := append([]string{"-scenario", tc.name, "-json", t.TempDir() + "/r.json",
				"-policy", "../../examples/policies/quickstart-ai.json"}, tc.args...)
			if code := runContext(ctx, args, &out, &errOut); code != 0 {
				t.Fatalf("cloudload = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
			}
			t.Log(out.String())
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q", w)
				}
			}
		})
	}
}
