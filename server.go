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

// LimitConns makes srv apply Config.MaxConnectionsPerIP to every connection,
// not only to streams: a connection from an address that already holds
// that many is closed as soon as it is accepted, before it can send a
// request. Requests that are not streams (publishes, health checks, or ones
// that never finish sending) then cannot use up the server's file
// descriptors from one address. Connections from Config.TrustedProxies are
// not counted, since a proxy carries many clients; the streams behind it
// are still counted by their client's address. A connection taken over by a
// detached stream counts as that stream from then on.
//
// It chains srv.ConnState; call it before srv starts serving.
func (h *Hub) LimitConns(srv *http.Server) {
	perIP := h.cfg.MaxConnectionsPerIP
	if perIP <= 0 {
		return
	}
	var (
		mu      sync.Mutex
		byIP    = map[string]int{}
		counted = map[net.Conn]string{}
	)
	next := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			host, _, err := net.SplitHostPort(c.RemoteAddr().String())
			if err == nil && !h.trusted(host) {
				mu.Lock()
				over := byIP[host] >= perIP
				if !over {
					byIP[host]++
					counted[c] = host
				}
				mu.Unlock()
				if over {
					c.Close()
				}
			}
		case http.StateHijacked, http.StateClosed:
			mu.Lock()
			if host, ok := counted[c]; ok {
				delete(counted, c)
				if byIP[host]--; byIP[host] <= 0 {
					delete(byIP, host)
				}
			}
			mu.Unlock()
		}
		if next != nil {
			next(c, s)
		}
	}
}
