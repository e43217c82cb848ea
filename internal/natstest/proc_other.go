//go:build !linux

package natstest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// stopped cannot tell without /proc: it reports the signal delivered.
func stopped(int) bool { return true }

// fixedRange cannot tell the ephemeral range: ports come from the kernel.
func fixedRange() (lo, hi int) { return 0, 0 }
