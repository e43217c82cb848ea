package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"

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
	listening := fs.group(groupListening)
	w.tlsCert = listening.String("tls-cert", "", "certificate `file` (PEM) to serve HTTPS and HTTP/2; needs --tls-key")
	w.tlsKey = listening.String("tls-key", "", "private key `file` (PEM) of --tls-cert")
	fs.group(groupSecurity).Var(&w.corsOrigins, "cors-origin", "`origin` whose pages may subscribe and publish, e.g. https://app.example (repeatable; comma-separated in the environment)")
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
	ssehub.CloseFreshConns(srv)
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
