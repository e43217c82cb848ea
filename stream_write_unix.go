//go:build unix

package ssehub

import "syscall"

const canWriteNonblocking = true

// nbWriter makes single write(2) attempts on a non-blocking socket. Its
// attempt function is made once, so that a write does not allocate.
type nbWriter struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool
	p   []byte
	n   int
	err error
}

func (w *nbWriter) init(raw syscall.RawConn) {
	w.raw = raw
	w.fn = w.attempt
}

func (w *nbWriter) attempt(fd uintptr) bool {
	for {
		w.n, w.err = syscall.Write(int(fd), w.p)
		if w.err != syscall.EINTR {
			return true
		}
	}
}

// write makes one attempt to write p and returns how much the socket
// took: possibly less than p, or nothing when its buffer is full.
func (w *nbWriter) write(p []byte) (int, error) {
	w.p = p
	err := w.raw.Write(w.fn)
	w.p = nil
	switch {
	case err != nil:
		return 0, err
	case w.err == syscall.EAGAIN:
		return 0, nil
	case w.err != nil:
		return 0, w.err
	}
	return w.n, nil
}

// peerClosed reports whether the client has ended its side of the
// connection, or reset it, by peeking at what it sent without waiting.
// Data waiting to be read is not an end: it stays unread.
func (w *nbWriter) peerClosed() bool {
	var (
		n    int
		rerr error
		b    [1]byte
	)
	err := w.raw.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	})
	switch {
	case err != nil:
		return true
	case rerr == syscall.EAGAIN || rerr == syscall.EINTR:
		return false
	case rerr != nil:
		return true
	}
	return n == 0
}
