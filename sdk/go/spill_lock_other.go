//go:build !unix && !windows

package limitr

import (
	"errors"
	"fmt"
	"os"
)

// lockSpillDir creates the directory's lock file exclusively (O_EXCL) and removes it
// on unlock. These platforms have no lock the system releases when a process dies: a
// process that dies without Close leaves the file behind, and the directory stays
// locked until it is removed by hand (the error names it).
func lockSpillDir(dir string) (unlock func() error, err error) {
	path := spillLockPath(dir)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("%w; if no process uses it, remove the lock file", spillLockedError(dir))
		}
		return nil, fmt.Errorf("limitr: cloud: spill directory lock: %w", err)
	}
	fmt.Fprintf(f, "%d\n", os.Getpid())
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("limitr: cloud: spill directory lock: %w", err)
	}
	return func() error { return os.Remove(path) }, nil
}
