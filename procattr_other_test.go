//go:build !linux

package taskqueue

import "os/exec"

// dieWithTest is a no-op where Pdeathsig does not exist: children are still stopped by pid in every test's
// clean-up, but not when the test binary itself is killed.
func dieWithTest(*exec.Cmd) {}
