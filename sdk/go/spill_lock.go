package limitr

import (
	"fmt"
	"path/filepath"
)

// spillLockName is the lock file a Cloud holds in its spill directory. It is never
// removed (see lockSpillDir).
const spillLockName = ".lock"

func spillLockPath(dir string) string { return filepath.Join(dir, spillLockName) }

func spillLockedError(dir string) error {
	return fmt.Errorf("%w: %s (lock file %s)", ErrSpillLocked, dir, spillLockPath(dir))
}
