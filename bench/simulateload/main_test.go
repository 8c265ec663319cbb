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
	for _, args := range [][]string{{"-no-such-flag"}, {"-customers", "0"}, {"-database-url", ""}, {"stray"}} {
		var out, errOut bytes.Buffer
		t.Setenv("LIMITR_BENCH_DATABASE_URL", "")
		if args[0] == "-database-url" {
			t.Setenv("LIMITR_TEST_DATABASE_URL", "")
		}
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("simulateload %q = %d, want 2; stderr %s", args, code, errOut.String())
		}
	}
}

// TestShortRun replays 300 customers through the real job, checking the report's
// revenue, so bench/README.md's figures stay reproducible; the budget is not checked.
func TestShortRun(t *testing.T) {
	if os.Getenv("LIMITR_TEST_DATABASE_URL") == "" {
		t.Skip("LIMITR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/services.sh)\"`")
	}
	if testing.Short() {
		t.Skip("-short: the run creates a database")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	if code := run(ctx, []string{"-customers", "300"}, &out, &errOut); code != 0 {
		t.Fatalf("simulateload = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "budget: ") {
		t.Fatalf("output lacks the budget line:\n%s", out.String())
	}
}
