package bench_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/bench"
	limitr "github.com/limitr/limitr/sdk/go"
)

func TestWorkloadBatches(t *testing.T) {
	w := bench.NewWorkload([]string{"a", "b", "c"}, bench.QuickstartMeters, 4, 1)
	seen := map[string]bool{}
	for seq := int64(1); seq <= 3; seq++ {
		b := w.Batch("i", seq)
		if b.Sequence != seq || len(b.Deltas) != 4 {
			t.Fatalf("batch %d: %+v", seq, b)
		}
		in := map[string]bool{}
		for _, d := range b.Deltas {
			k := d.Customer + "/" + d.Entitlement
			if in[k] {
				t.Fatalf("meter %s twice in one batch", k)
			}
			in[k], seen[k] = true, true
			if !d.PeriodStart.Equal(d.PeriodStart.Truncate(24*time.Hour)) || d.Calls < 1 || d.Units == "" ||
				strings.HasSuffix(d.Overhead, "0") && strings.Contains(d.Overhead, ".") {
				t.Fatalf("delta %+v", d)
			}
		}
	}
	if len(seen) != 6 {
		t.Errorf("the cursor visited %d of 6 meters", len(seen))
	}
}

func TestWithLimit(t *testing.T) {
	doc, err := os.ReadFile("../examples/policies/quickstart-ai.json")
	if err != nil {
		t.Fatal(err)
	}
	out, err := bench.WithLimit(doc, "starter", "ai-chat-input", 600000)
	if err != nil {
		t.Fatal(err)
	}
	p, err := limitr.New(out)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Policy struct {
			Plans map[string]struct {
				Entitlements map[string]struct {
					Limit struct{ Value float64 } `json:"limit"`
				} `json:"entitlements"`
			} `json:"plans"`
		} `json:"policy"`
	}
	if err := json.Unmarshal(out, &m); err != nil || m.Policy.Plans["starter"].Entitlements["ai-chat-input"].Limit.Value != 600000 {
		t.Fatalf("limit not changed: %v", err)
	}
	if p.Version() == "" {
		t.Fatal("no version")
	}
	if _, err := bench.WithLimit(doc, "nope", "ai-chat-input", 1); err == nil {
		t.Fatal("missing plan accepted")
	}
}

func TestDist(t *testing.T) {
	var d []time.Duration
	for i := 100; i >= 1; i-- {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	got := bench.NewDist(d)
	if got.N != 100 || got.P50 != 50*time.Millisecond || got.P99 != 99*time.Millisecond || got.Max != 100*time.Millisecond {
		t.Fatalf("%+v", got)
	}
	if (bench.NewDist(nil) != bench.Dist{}) {
		t.Fatal("empty")
	}
}
