package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/limitr/limitr/internal/wire"
	limitr "github.com/limitr/limitr/sdk/go"
)

// TestSpillReplayAfterRestart replays a committed batch through a real SDK restart: an
// instance with Spill(dir) spills a batch while the API is unreachable and stamps it
// with its identity before the first attempt; the batch is then delivered. A copy of
// the file taken before delivery is put back, as if the process had died after the
// server committed it but before the file was removed, and a new instance on the same
// directory sends it again: the server answers duplicate and counts nothing twice.
func TestSpillReplayAfterRestart(t *testing.T) {
	_, pool := newDB(t)
	apiLog, sdkLog, workerLog := newSink(t, "api"), newSink(t, "sdk"), newSink(t, "worker")
	a := startAPI(t, pool, nil, apiLog, "")
	startWorker(t, pool, nil, 100*time.Millisecond, workerLog)
	px, err := NewProxy(a.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = px.Close() })
	cp := newControlPlane(t, a.URL)
	cp.setup(quickstart(t))
	dir := t.TempDir()
	base := "http://" + px.Addr()
	ctx := context.Background()
	tl := newTally()
	sdk1 := connectSDK(t, base, cp.sdk, sdkLog, limitr.WithOverflow(limitr.Spill(dir)), limitr.WithBufferSize(1))
	for _, c := range []string{"s-1", "s-2"} {
		if _, err := sdk1.CreateCustomer(ctx, c, "growth"); err != nil {
			t.Fatal(err)
		}
	}
	use := func(n int64) {
		t.Helper()
		for _, c := range []string{"s-1", "s-2"} {
			if ok, err := tl.allow(ctx, sdk1, c, "ai-chat-input", n); !ok || err != nil {
				t.Fatalf("Allow(%s, %d) = %v, %v", c, n, ok, err)
			}
		}
	}
	use(10)
	waitFor(t, 5*time.Second, "the first batch to be acknowledged", func() bool {
		s := sdk1.SyncStats()
		return s.Batches > 0 && s.Pending == 0 && s.Queued == 0 && s.Spilled == 0
	})

	// API unreachable: the next batch (two meters, over the buffer of one) is spilled and
	// stamped with its identity before its first attempt.
	px.Down()
	use(20)
	var name string
	var stamped []byte
	waitFor(t, 5*time.Second, "a spilled batch stamped with its identity", func() bool {
		files, _ := filepath.Glob(filepath.Join(dir, "*.batch"))
		for _, f := range files {
			data, err := os.ReadFile(f)
			if err != nil {
				continue
			}
			var b wire.UsageBatch
			if json.Unmarshal(data, &b) == nil && b.InstanceID != "" && len(b.Deltas) == 2 {
				name, stamped = f, data
				return true
			}
		}
		return false
	})
	use(30)
	if err := px.Up(time.Now().Add(5 * time.Second)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "the spilled usage to be delivered", func() bool {
		s := sdk1.SyncStats()
		return s.Spilled == 0 && s.Queued == 0 && s.Pending == 0 && s.LastError == nil
	})
	closeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := sdk1.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	s1 := sdk1.SyncStats()
	if _, err := os.Stat(name); !os.IsNotExist(err) {
		t.Fatalf("the delivered spill file is still there: %v", err)
	}

	// The "crash": the file is back; a new instance on the directory resends it.
	if err := os.WriteFile(name, stamped, 0o600); err != nil {
		t.Fatal(err)
	}
	sdk2 := connectSDK(t, base, cp.sdk, sdkLog, limitr.WithOverflow(limitr.Spill(dir)))
	waitFor(t, 10*time.Second, "the replayed batch to be acknowledged", func() bool {
		s := sdk2.SyncStats()
		return s.Batches == 1 && s.Spilled == 0
	})
	if err := sdk2.Close(closeCtx); err != nil {
		t.Fatal(err)
	}
	s2 := sdk2.SyncStats()
	if s2.Duplicates != 1 || s2.Dropped != 0 {
		t.Errorf("the replay: %+v; want one batch acknowledged as a duplicate", s2)
	}
	// Every batch file is gone; the lock file stays (removing it would let two
	// processes each lock a file of their own).
	if left, _ := filepath.Glob(filepath.Join(dir, "*.batch*")); len(left) != 0 {
		t.Errorf("files left in the spill directory: %s", strings.Join(left, ", "))
	}
	waitDrained(t, pool, 10*time.Second)
	got := checkTotals(t, pool, mergeTallies(tl))
	checkBatches(t, pool, []limitr.SyncStats{s1}, 0)
	var b wire.UsageBatch
	_ = json.Unmarshal(stamped, &b)
	t.Logf("replayed %s sequence %d (%d deltas) from a restored spill file through a new instance: acknowledged as duplicate=%v; totals %d units = %d allowed; %d batches committed by the first instance",
		b.InstanceID, b.Sequence, len(b.Deltas), s2.Duplicates == 1, got, tl.units(), s1.Batches)
}
