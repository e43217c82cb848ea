package ssehub

import (
	"sync"
	"syscall"
)

// peerWatch finds detached streams whose client went away, as soon as its
// end of input arrives, without a goroutine per stream: every detached
// connection is registered, edge-triggered, with an epoll instance of its
// own (apart from the runtime's), and one goroutine waits on it. A stream
// served by its handler learns of a departed client at once, from
// net/http's read of the connection; a detached one must not keep its
// connection slot until the next heartbeat. Other systems rely on the
// heartbeats alone.
//
// Its zero value is ready. The goroutine runs while streams are watched.
type peerWatch struct {
	mu    sync.Mutex
	epfd  int // the running instance; meaningful while fds is not empty
	stop  int // write end of the pipe that ends the goroutine
	fds   map[int32]*detached
	ready bool // epfd and stop are set
}

// watch registers st's connection. It does nothing when st has no raw
// connection or epoll fails: heartbeats still find the client gone.
func (w *peerWatch) watch(st *detached) {
	if !st.nbOK {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.ready && !w.start() {
		return
	}
	st.nb.raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | -syscall.EPOLLET, Fd: int32(fd)}
		if syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev) == nil {
			st.watchFD = int32(fd)
			w.fds[int32(fd)] = st
		}
	})
}

// unwatch forgets st; closing its connection has taken it out of the epoll
// instance. The goroutine ends with the last stream.
func (w *peerWatch) unwatch(st *detached) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st.watchFD < 0 || w.fds[st.watchFD] != st {
		return
	}
	delete(w.fds, st.watchFD)
	if len(w.fds) == 0 && w.ready {
		syscall.Write(w.stop, []byte{0})
		w.ready = false
	}
}

// start creates the epoll instance and its goroutine. w.mu is held.
func (w *peerWatch) start() bool {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return false
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		syscall.Close(epfd)
		return false
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(p[0])}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(p[0])
		syscall.Close(p[1])
		return false
	}
	if w.fds == nil {
		w.fds = map[int32]*detached{}
	}
	w.epfd, w.stop, w.ready = epfd, p[1], true
	go w.wait(epfd, p[0], p[1])
	return true
}

// wait passes readiness events to their streams until the stop pipe is
// written, then closes the instance and the pipe.
func (w *peerWatch) wait(epfd, stopR, stopW int) {
	defer func() {
		syscall.Close(epfd)
		syscall.Close(stopR)
		syscall.Close(stopW)
	}()
	events := make([]syscall.EpollEvent, 64)
	for {
		n, err := syscall.EpollWait(epfd, events, -1)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == stopR {
				return
			}
			w.mu.Lock()
			st := w.fds[ev.Fd]
			w.mu.Unlock()
			if st != nil {
				// The fd may have been reused by a newer stream since the
				// event: the stream checks before it believes it.
				st.peerActive()
			}
		}
	}
}
