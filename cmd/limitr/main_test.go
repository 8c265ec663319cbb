package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func runCLI(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestValidateGoodPolicies(t *testing.T) {
	files, err := filepath.Glob("../../examples/policies/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no example policies: %v", err)
	}
	code, out, errOut := runCLI(t, append([]string{"validate"}, files...)...)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, f := range files {
		if !strings.Contains(out, f+": ok\n") {
			t.Errorf("missing %q in:\n%s", f+": ok", out)
		}
	}
}

func TestValidateBadPolicyListsEveryProblem(t *testing.T) {
	const bad = "testdata/bad-policy.yaml"
	code, out, _ := runCLI(t, "validate", "../../examples/policies/seats.yaml", bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	want := []string{
		"../../examples/policies/seats.yaml: ok",
		bad + `: policy.plans.free.entitlements.seats.limit.credit: credit "seet" does not exist`,
		bad + ": policy.credits.storage.overhead_cost: must not be negative",
		bad + ": policy.plans.free.entitlements.storage.limit.mode: ",
		bad + ": policy.plans.free.entitlements.api.limit.hard_trailing: ",
		bad + ": policy.plans.free.entitlements.reports.limit.reset_sch: ",
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	if n := strings.Count(out, bad+": "); n != 5 {
		t.Errorf("%d problem lines for %s, want 5:\n%s", n, bad, out)
	}
}

func TestValidateMissingFile(t *testing.T) {
	code, out, _ := runCLI(t, "validate", "testdata/no-such-policy.json")
	if code != 1 || !strings.Contains(out, "testdata/no-such-policy.json: no such file or directory") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"frobnicate"},
		{"dev"},
		{"validate"},
		{"validate", "-nope", "x.json"},
		{"test"},
		{"test", "-run", "(", "."},
		{"test", "testdata/does-not-exist"},
		{"invoice"},
		{"invoice", "preview"},
		{"help", "frobnicate"},
		{"version", "extra"},
	} {
		code, out, errOut := runCLI(t, args...)
		if code != 2 {
			t.Errorf("%q: exit %d, want 2\nstdout:\n%s\nstderr:\n%s", args, code, out, errOut)
		}
	}
	_, _, errOut := runCLI(t, "frobnicate")
	if !strings.Contains(errOut, `unknown command "frobnicate"`) || !strings.Contains(errOut, "Usage:") {
		t.Errorf("unknown command output:\n%s", errOut)
	}
}

func TestHelpAndVersion(t *testing.T) {
	code, out, _ := runCLI(t, "help")
	if code != 0 || !strings.Contains(out, "limitr validate") || !strings.Contains(out, "limitr test") {
		t.Errorf("help: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "help", "test")
	if code != 0 || !strings.Contains(out, "expect_value") {
		t.Errorf("help test: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "help", "invoice")
	if code != 0 || !strings.Contains(out, "limitr invoice preview --policy FILE") || !strings.Contains(out, "grant_covered") {
		t.Errorf("help invoice: exit %d\n%s", code, out)
	}
	code, out, _ = runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "limitr ") {
		t.Errorf("version: exit %d %q", code, out)
	}
}

// TestExampleScenarios runs every scenario under examples/scenarios; any failure
// (including a pending scenario that now passes) fails the test.
func TestExampleScenarios(t *testing.T) {
	code, out, errOut := runCLI(t, "test", "../../examples/scenarios")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.HasSuffix(last, " passed, 0 failed") || strings.HasPrefix(last, "0 passed") {
		t.Fatalf("summary %q", last)
	}
	// One scenario at least per example policy.
	for _, policy := range []string{"quickstart-ai.json", "ai-credits.yaml", "seats.yaml", "storage-units.json"} {
		found := false
		files, _ := filepath.Glob("../../examples/scenarios/*.yaml")
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err == nil && strings.Contains(string(b), "policies/"+policy) {
				found = true
			}
		}
		if !found {
			t.Errorf("no scenario uses %s", policy)
		}
	}
}

func TestWrongScenarioFailsWithDiff(t *testing.T) {
	code, out, _ := runCLI(t, "test", "testdata/wrong-scenario.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"PASS  step 2 (line 5) increment",
		"FAIL  step 3 (line 7) increment",
		"- expected: true",
		"+ got:      false",
		"FAIL  step 4 (line 10) expect_value",
		"- expected: 2",
		"+ got:      1",
		"FAIL  step 5 (line 12) decrement",
		"meter.value: expected 5, got 0",
		`- expected: {"meter":{"old":1,"value":5},"type":"meter-changed"}`,
		`+ got:      {"credit":{`,
		"PASS  step 6 (line 16) expect_value",
		"--- FAIL deliberately wrong expectations: 3 of 6 steps failed",
		"0 passed, 1 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestInvalidScenarioReportsEveryProblem(t *testing.T) {
	code, out, _ := runCLI(t, "test", "testdata/invalid-scenario.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		`testdata/invalid-scenario.yaml:5: step 2: unknown step kind "alow" (did you mean "allow"?)`,
		`testdata/invalid-scenario.yaml:6: step 3 (increment): entitlment: unknown field (did you mean "entitlement"?)`,
		"0 passed, 1 failed",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func TestQuietAndRunFilter(t *testing.T) {
	code, out, _ := runCLI(t, "test", "-q", "-run", "TiB", "../../examples/scenarios")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	if strings.Contains(out, "PASS  step") || !strings.HasSuffix(out, "1 passed, 0 failed\n") {
		t.Errorf("quiet filtered output:\n%s", out)
	}
}
