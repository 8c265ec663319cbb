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
		{"-no-such-flag"}, {"-customers", "0"}, {"-days", "0"}, {"-runs", "0"}, {"-alerts", "-1"}, {"-database-url", ""}, {"stray"},
	} {
		var out, errOut bytes.Buffer
		t.Setenv("LIMITR_BENCH_DATABASE_URL", "")
		if args[0] == "-database-url" {
			t.Setenv("LIMITR_TEST_DATABASE_URL", "")
		}
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("dashload %q = %d, want 2; stderr %s", args, code, errOut.String())
		}
	}
}

// TestShortRun seeds 300 customers and times every page twice, so the figures in the
// README stay reproducible; the budget is not checked.
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
	if code := run(ctx, []string{"-customers", "300", "-days", "3", "-alerts", "20", "-invoices", "5", "-runs", "2"}, &out, &errOut); code != 0 {
		t.Fatalf("dashload = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, page := range []string{"/ ", "/policies ", "/customers ", "/invoices ", "/alerts ", "/settings/audit "} {
		line := ""
		for _, l := range strings.Split(out.String(), "\n") {
			if strings.HasPrefix(l, page) {
				line = l
			}
		}
		if !strings.Contains(line, " 200 ") {
			t.Errorf("page %q: %q\n%s", page, line, out.String())
		}
	}
}
