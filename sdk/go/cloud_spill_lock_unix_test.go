//go:build unix

package limitr_test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

const spillLockChildEnv = "LIMITR_TEST_SPILL_LOCK_CHILD"

// TestCloudSpillLockChild is the other process of TestCloudSpillLockAcrossProcesses:
// it holds a spill directory until it is killed.
func TestCloudSpillLockChild(t *testing.T) {
	dir := os.Getenv(spillLockChildEnv)
	if dir == "" {
		t.Skip("runs as the child of TestCloudSpillLockAcrossProcesses")
	}
	f := newFakeCP(t, cloudPolicy("100"))
	connect(t, f, limitr.WithOverflow(limitr.Spill(dir)))
	os.Stdout.WriteString("locked\n")
	time.Sleep(time.Minute) // killed long before
}

// Another process holding the spill directory keeps this one out; when it dies
// (killed: no Close), the kernel releases the lock and the directory can be used.
func TestCloudSpillLockAcrossProcesses(t *testing.T) {
	if os.Getenv(spillLockChildEnv) != "" {
		t.Skip("in the child")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestCloudSpillLockChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), spillLockChildEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	locked := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "locked" {
				locked <- true
				return
			}
		}
		locked <- false
	}()
	select {
	case ok := <-locked:
		if !ok {
			t.Fatal("the child exited without taking the lock")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the child did not take the lock")
	}

	f := newFakeCP(t, cloudPolicy("100"))
	ctx := context.Background()
	p, err := limitr.Cloud(ctx, f.token, limitr.WithBaseURL(f.srv.URL), limitr.WithLogger(quiet), limitr.WithOverflow(limitr.Spill(dir)))
	if !errors.Is(err, limitr.ErrSpillLocked) {
		if p != nil {
			_ = p.Close(ctx)
		}
		t.Fatalf("with another process on %s: %v", dir, err)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	closeNow(t, connect(t, f, limitr.WithOverflow(limitr.Spill(dir))))
}
