package stripemock

import (
	"os/exec"
	"syscall"
)

// setDeathSignal kills stripe-mock with the test binary even when cleanups do not run
// (a test timeout panics out of the binary), so no stray stripe-mock keeps a port.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
