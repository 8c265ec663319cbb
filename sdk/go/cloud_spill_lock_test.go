package limitr_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	limitr "github.com/limitr/limitr/sdk/go"
)

// Two Clouds in one process on one spill directory: the second fails with
// ErrSpillLocked, naming the directory, and takes nothing over. Once the first is
// closed the directory is free again. (flock locks belong to an open file
// description, so they conflict within one process as between two.)
func TestCloudSpillDirectoryIsLocked(t *testing.T) {
	f := newFakeCP(t, cloudPolicy("100"))
	dir := t.TempDir()
	first := connect(t, f, limitr.WithOverflow(limitr.Spill(dir)))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	second, err := limitr.Cloud(ctx, f.token, limitr.WithBaseURL(f.srv.URL), limitr.WithLogger(quiet), limitr.WithOverflow(limitr.Spill(dir)))
	if !errors.Is(err, limitr.ErrSpillLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "another process") {
		if second != nil {
			_ = second.Close(ctx)
		}
		t.Fatalf("second Cloud on %s: %v", dir, err)
	}
	closeNow(t, first)
	third := connect(t, f, limitr.WithOverflow(limitr.Spill(dir)))
	closeNow(t, third)
}

// A Cloud that fails to start after taking the lock (here: nothing is published)
// releases it.
func TestCloudFailedStartReleasesTheSpillLock(t *testing.T) {
	f := newFakeCP(t, "")
	dir := t.TempDir()
	ctx := context.Background()
	if _, err := limitr.Cloud(ctx, f.token, limitr.WithBaseURL(f.srv.URL), limitr.WithLogger(quiet), limitr.WithOverflow(limitr.Spill(dir))); !errors.Is(err, limitr.ErrNoPolicy) {
		t.Fatalf("Cloud: %v", err)
	}
	f.publish(cloudPolicy("100"))
	closeNow(t, connect(t, f, limitr.WithOverflow(limitr.Spill(dir))))
}
