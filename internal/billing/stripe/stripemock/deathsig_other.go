//go:build !linux

package stripemock

import "os/exec"

// setDeathSignal has no portable equivalent: cleanups kill stripe-mock.
func setDeathSignal(*exec.Cmd) {}
