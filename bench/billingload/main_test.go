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
		{"-customers", "0"},
		{"-ratio", "-1"},
		{"-database-url", ""},
		{"stray"},
	} {
		var out, errOut bytes.Buffer
		t.Setenv("LIMITR_BENCH_DATABASE_URL", "")
		if args[0] == "-database-url" {
			t.Setenv("LIMITR_TEST_DATABASE_URL", "")
		}
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("billingload %q = %d, want 2; stderr %s", args, code, errOut.String())
		}
	}
}

// TestShortRun closes a period for 1,100 customers end to end (a fresh database; three
// pages, so both of Close's transactions run), checking every invoice, so the figures
// in bench/README.md stay reproducible. The budget is not checked. It takes a few
// seconds, most of them creating the database.
func TestShortRun(t *testing.T) {
	if os.Getenv("LIMITR_TEST_DATABASE_URL") == "" {
		t.Skip("LIMITR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/services.sh)\"`")
	}
	if testing.Short() {
		t.Skip("-short: the run creates a database")
	}
	const n = "1100"
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	args := []string{"-customers", n, "-ratio", "0", "-json", t.TempDir() + "/r.json"}
	if code := run(ctx, args, &out, &errOut); code != 0 {
		t.Fatalf("billingload = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	t.Log(out.String())
	for _, want := range []string{"billing close N=" + n + ": " + n + " drafted, " + n + " finalized", "invoices/s",
		"numbered 1.." + n + " without gaps", "  memory: heap in use ", "µs per invoice"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
