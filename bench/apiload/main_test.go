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
		{"-scenarios", "poll,nap"},
		{"-database-url", "", "-addr", ""},
		{"-addr", "http://127.0.0.1:1", "-operator-token", ""},
		{"stray"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("apiload %q = %d, want 2; stderr %s", args, code, errOut.String())
		}
	}
}

// TestShortRun runs the command end to end for a moment (in-process servers, a fresh
// database), so the figures in bench/README.md stay reproducible.
func TestShortRun(t *testing.T) {
	if os.Getenv("LIMITR_TEST_DATABASE_URL") == "" {
		t.Skip("LIMITR_TEST_DATABASE_URL is not set: run `eval \"$(scripts/services.sh)\"`")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	args := []string{"-duration", "150ms", "-warmup", "50ms", "-workers", "2", "-create-workers", "2",
		"-scenarios", "poll,poll-redis,create", "-json", t.TempDir() + "/r.json"}
	if code := run(ctx, args, &out, &errOut); code != 0 {
		t.Fatalf("apiload = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	t.Log(out.String())
	for _, want := range []string{"poll ", "statuses=[304:", "create ", "statuses=[201:", "errors=0 unexpected=0"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
