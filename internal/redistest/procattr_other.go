//go:build !linux

package redistest

import "os/exec"

// DieWithParent is a no-op where Pdeathsig does not exist: children are still stopped by pid in every test's
// clean-up, but not when the test binary itself is killed.
func DieWithParent(*exec.Cmd) {}
