//go:build !linux

package redistest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// memDir returns "": test servers keep their files in the test's
// temporary directory.
func memDir() string { return "" }
