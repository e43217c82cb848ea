package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"

	"github.com/ssehub/ssehub"
)

// webFlags are the serve flags for browsers: pages on other origins, and
// HTTPS, over which browsers speak HTTP/2 and so are not held to 6
// connections per host.
type webFlags struct {
	corsOrigins listFlag
	tlsCert     *string
	tlsKey      *string
	tls         *tls.Config // set by prepare when serving HTTPS
}

func addWebFlags(fs *flagSet) *webFlags {
	w := &webFlags{}
	fs.Var(&w.corsOrigins, "cors-origin", "`origin` whose pages may subscribe and publish, e.g. https://app.example (repeatable; comma-separated in the environment)")
	w.tlsCert = fs.String("tls-cert", "", "certificate `file` (PEM) to serve HTTPS and HTTP/2; needs --tls-key")
	w.tlsKey = fs.String("tls-key", "", "private key `file` (PEM) of --tls-cert")
	return w
}

// prepare checks the flags and loads the certificate.
func (w *webFlags) prepare() error {
	for _, o := range w.corsOrigins {
		if _, err := ssehub.NormalizeOrigin(o); err != nil {
			return fmt.Errorf("--cors-origin: %v", err)
		}
	}
	if (*w.tlsCert == "") != (*w.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if *w.tlsCert == "" {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(*w.tlsCert, *w.tlsKey)
	if err != nil {
		return fmt.Errorf("--tls-cert, --tls-key: %v", err)
	}
	w.tls = &tls.Config{Certificates: []tls.Certificate{cert}}
	return nil
}

// handler returns h with CORS for the allowed origins.
func (w *webFlags) handler(h http.Handler) (http.Handler, error) {
	if len(w.corsOrigins) == 0 {
		return h, nil
	}
	return ssehub.CORS(w.corsOrigins, h)
}

// serve serves srv on ln, over TLS (and so HTTP/2) when prepare loaded a
// certificate.
func (w *webFlags) serve(srv *http.Server, ln net.Listener) error {
	srv.RegisterOnShutdown(trackFreshConns(srv).closeAll)
	if w.tls == nil {
		return srv.Serve(ln)
	}
	srv.TLSConfig = w.tls
	return srv.ServeTLS(ln, "", "")
}

// url returns the hub's URL on ln.
func (w *webFlags) url(ln net.Listener) string {
	if w.tls != nil {
		return "https://" + ln.Addr().String()
	}
	return "http://" + ln.Addr().String()
}

// freshConns tracks connections that have not sent a request yet.
// Browsers open such spare connections ahead of need, and Shutdown waits
// up to 5 seconds for each to send one; closeAll closes them instead.
type freshConns struct {
	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	closing bool
}

// trackFreshConns sets srv.ConnState to track srv's fresh connections.
func trackFreshConns(srv *http.Server) *freshConns {
	f := &freshConns{conns: map[net.Conn]struct{}{}}
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		f.mu.Lock()
		defer f.mu.Unlock()
		switch {
		case s == http.StateNew && f.closing:
			c.Close()
		case s == http.StateNew:
			f.conns[c] = struct{}{}
		default:
			delete(f.conns, c)
		}
	}
	return f
}

// closeAll closes the connections that have not sent a request, and those
// accepted from now on.
func (f *freshConns) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closing = true
	for c := range f.conns {
		c.Close()
	}
}
