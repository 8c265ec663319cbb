//go:build unix

package limitr

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// lockSpillDir takes an exclusive flock(2) on the directory's lock file, without
// waiting. The kernel releases it when the file is closed or the process dies, so a
// crash never leaves the directory locked. flock locks belong to an open file
// description: two Clouds in one process conflict as two processes do. The file is
// left in place on unlock: removing it would let a process that opened the old file
// and one that creates a new one both hold "the" lock.
func lockSpillDir(dir string) (unlock func() error, err error) {
	f, err := os.OpenFile(spillLockPath(dir), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("limitr: cloud: spill directory lock: %w", err)
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, spillLockedError(dir)
		}
		return nil, fmt.Errorf("limitr: cloud: spill directory lock %s: %w", spillLockPath(dir), err)
	}
	return f.Close, nil
}
