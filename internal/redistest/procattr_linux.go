package redistest

import (
	"os/exec"
	"syscall"
)

// DieWithParent makes a child process (a redis-server, a worker) receive SIGKILL when the test binary dies, so that
// a test binary killed by a timeout or a signal leaves no server behind.
func DieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
