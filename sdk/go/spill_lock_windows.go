//go:build windows

package limitr

import (
	"errors"
	"fmt"
	"syscall"
)

// errorSharingViolation is ERROR_SHARING_VIOLATION, which the syscall package does
// not name.
const errorSharingViolation syscall.Errno = 32

// lockSpillDir opens the directory's lock file with no sharing allowed: while this
// handle is open no other process (nor another Cloud in this one) can open it.
// Windows closes the handle when the process dies, so a crash never leaves the
// directory locked. The file is left in place on unlock.
func lockSpillDir(dir string) (unlock func() error, err error) {
	name, err := syscall.UTF16PtrFromString(spillLockPath(dir))
	if err != nil {
		return nil, fmt.Errorf("limitr: cloud: spill directory lock: %w", err)
	}
	h, err := syscall.CreateFile(name, syscall.GENERIC_READ|syscall.GENERIC_WRITE, 0, nil,
		syscall.OPEN_ALWAYS, syscall.FILE_ATTRIBUTE_NORMAL, 0)
	if err != nil {
		if errors.Is(err, errorSharingViolation) {
			return nil, spillLockedError(dir)
		}
		return nil, fmt.Errorf("limitr: cloud: spill directory lock %s: %w", spillLockPath(dir), err)
	}
	return func() error { return syscall.CloseHandle(h) }, nil
}
