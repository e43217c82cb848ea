//go:build !unix

package ssehub

import "syscall"

// Without non-blocking writes, every write of a detached stream goes
// through a goroutine of its own.
const canWriteNonblocking = false

type nbWriter struct{}

func (w *nbWriter) init(syscall.RawConn) {}

func (w *nbWriter) write([]byte) (int, error) { return 0, nil }

func (w *nbWriter) peerClosed() bool { return false }
