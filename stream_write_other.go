//go:build !unix

package ssehub

import "syscall"

// Without non-blocking writes, every write of a detached stream goes
// through a goroutine of its own.
const canWriteNonblocking = false

func writeNonblocking(syscall.RawConn, []byte) (int, error) { return 0, nil }
