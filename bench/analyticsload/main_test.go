package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

func TestBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"-no-such-flag"},
		{"-customers", "0"},
		{"-days", "-1"},
		{"-runs", "0"},
		{"-database-url", ""},
		{"stray"},
	} {
		var out, errOut bytes.Buffer
		t.Setenv("LIMITR_BENCH_DATABASE_URL", "")
		if args[0] == "-database-url" {
			t.Setenv("LIMITR_TEST_DATABASE_URL", "")
		}
		if code := run(context.Background(), args, &out, &errOut); code != 2 {
			t.Errorf("analyticsload %q = %d, want 2; stderr %s", args, code, errOut.String())
		}
	}
}

// TestShortRun seeds 2,000 customers over 5 days and runs every query, so the figures
// in bench/README.md stay reproducible. The budget is not checked.
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
	path := t.TempDir() + "/r.json"
	if code := run(ctx, []string{"-customers", "2000", "-days", "5", "-runs", "2", "-json", path}, &out, &errOut); code != 0 {
		t.Fatalf("analyticsload = %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	t.Log(out.String())
	var res struct {
		Rows    int64 `json:"running_total_rows"`
		Queries []struct {
			Name   string `json:"name"`
			Groups int    `json:"groups"`
		} `json:"queries"`
	}
	b, err := os.ReadFile(path)
	if err == nil {
		err = json.Unmarshal(b, &res)
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Rows != 2000*6 || len(res.Queries) != 6 {
		t.Fatalf("result: %+v", res)
	}
	for _, q := range res.Queries {
		want := 50
		switch {
		case strings.HasPrefix(q.Name, "plans"):
			want = 5
		case strings.HasPrefix(q.Name, "entitlements"):
			want = 2
		}
		if q.Groups != want {
			t.Errorf("%s: %d groups, want %d", q.Name, q.Groups, want)
		}
	}
}
