package ssehub

import (
	"net"
	"net/http"
	"sync"
)

// CloseFreshConns makes srv close, as soon as its shutdown starts, the
// connections that have not sent a request yet, and those it accepts from
// then on. Browsers open such spare connections ahead of need, and
// http.Server.Shutdown would otherwise wait up to five seconds for each to
// send one. It chains srv.ConnState and registers with
// srv.RegisterOnShutdown; call it before srv starts serving.
func CloseFreshConns(srv *http.Server) {
	var (
		mu      sync.Mutex
		fresh   = map[net.Conn]struct{}{}
		closing bool
	)
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		mu.Lock()
		switch {
		case s == http.StateNew && closing:
			c.Close()
		case s == http.StateNew:
			fresh[c] = struct{}{}
		default:
			delete(fresh, c)
		}
		mu.Unlock()
		if next != nil {
			next(c, s)
		}
	}
	srv.RegisterOnShutdown(func() {
		mu.Lock()
		defer mu.Unlock()
		closing = true
		for c := range fresh {
			c.Close()
		}
	})
}
