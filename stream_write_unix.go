//go:build unix

package ssehub

import "syscall"

const canWriteNonblocking = true

// writeNonblocking makes one write(2) attempt on raw's non-blocking socket
// and returns how much it took: possibly less than p, or nothing when the
// socket buffer is full.
func writeNonblocking(raw syscall.RawConn, p []byte) (int, error) {
	var (
		n    int
		werr error
	)
	err := raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), p)
			if werr != syscall.EINTR {
				return true
			}
		}
	})
	switch {
	case err != nil:
		return 0, err
	case werr == syscall.EAGAIN:
		return 0, nil
	case werr != nil:
		return 0, werr
	}
	return n, nil
}
