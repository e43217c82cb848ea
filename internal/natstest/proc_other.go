//go:build !linux

package natstest

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }

// stopped cannot tell without /proc: it reports the signal delivered.
func stopped(int) bool { return true }
