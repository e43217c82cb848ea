package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"
)

// endpointURL returns the URL of a hub's endpoint ("sse" or "publish")
// from what the user gave as --url: the hub's base URL
// (http://127.0.0.1:8080, or http://host/prefix/ under a path prefix), or
// an endpoint's own URL. A path ending in /sse or /publish is taken as the
// hub's endpoint of that name, so one URL serves both publish and
// subscribe; any other path is the endpoint itself, for a hub mounted on
// a path of its own (http://127.0.0.1:8080/events).
func endpointURL(raw, endpoint string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q is not an http(s) URL; give the hub's, as in http://127.0.0.1:8080", raw)
	}
	switch p := u.Path; {
	case p == "" || strings.HasSuffix(p, "/"):
		return u.JoinPath(endpoint), nil
	case strings.HasSuffix(p, "/sse") || strings.HasSuffix(p, "/publish"):
		u.Path = p[:strings.LastIndex(p, "/")+1] + endpoint
		u.RawPath = ""
		return u, nil
	}
	return u, nil
}

// reachHint explains why a request to the hub at hubURL failed to get an
// answer, and how to fix it. It returns "" when it knows nothing useful.
func reachHint(hubURL string, err error) string {
	u, _ := url.Parse(hubURL)
	host, scheme := "", ""
	if u != nil {
		host, scheme = u.Host, u.Scheme
	}
	var (
		dnsErr     *net.DNSError
		unknownCA  x509.UnknownAuthorityError
		hostnameEr x509.HostnameError
		recordErr  tls.RecordHeaderError
	)
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Sprintf("nothing listens at %s: is the hub running there (ssehub serve)?", host)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("the host in %s is unknown; check --url", hubURL)
	case errors.As(err, &unknownCA):
		return "the hub's certificate is not signed by an authority this machine trusts; for a self-signed one, run with SSL_CERT_FILE=cert.pem"
	case errors.As(err, &hostnameEr):
		return fmt.Sprintf("the hub's certificate is not for %s; use the name it was issued for", u.Hostname())
	case errors.As(err, &recordErr), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return fmt.Sprintf("the hub speaks plain HTTP, not HTTPS: use --url http://%s", strings.TrimPrefix(hubURL, scheme+"://"))
	case errors.Is(err, os.ErrDeadlineExceeded), strings.Contains(err.Error(), "deadline exceeded"):
		return fmt.Sprintf("no answer from %s in time: is a firewall in the way, or the hub overloaded?", host)
	}
	return ""
}

// neverSent reports whether a request that failed with err cannot have
// reached the server: the connection or its TLS handshake failed.
func neverSent(err error) bool {
	var (
		op        *net.OpError
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		record    tls.RecordHeaderError
	)
	return (errors.As(err, &op) && op.Op == "dial") ||
		errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &invalid) ||
		errors.As(err, &record) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// httpsRefusal is what Go's HTTPS server answers to a plain HTTP request.
const httpsRefusal = "Client sent an HTTP request to an HTTPS server."

// httpsHint returns the fix when a plain-HTTP request reached an HTTPS
// server, "" otherwise.
func httpsHint(hubURL string, status int, body string) string {
	if status == 400 && strings.Contains(body, httpsRefusal) {
		return fmt.Sprintf("the hub speaks HTTPS: use --url https://%s", strings.TrimPrefix(hubURL, "http://"))
	}
	return ""
}

// listenError explains a failure to listen on addr, given by flag.
func listenError(flag, addr string, err error) error {
	var addrErr *net.AddrError
	hint := ""
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		hint = "another process listens there (a hub already running?): stop it, or pick another port"
	case errors.Is(err, syscall.EACCES):
		hint = "ports below 1024 need root or CAP_NET_BIND_SERVICE: pick a port above 1023, as in 127.0.0.1:8080"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		hint = "no network interface of this machine has that address: use 127.0.0.1, 0.0.0.0 or one of its own"
	case errors.As(err, &addrErr) && strings.Contains(addrErr.Err, "missing port"):
		hint = "write host:port, as in 127.0.0.1:8080 or 0.0.0.0:8080"
	case errors.As(err, &addrErr) && strings.Contains(addrErr.Err, "too many colons"):
		hint = "write an IPv6 address in brackets, as in [::1]:8080"
	}
	msg := strings.TrimPrefix(err.Error(), "listen tcp ")
	if hint == "" {
		return fmt.Errorf("%s %s: %s", flag, addr, msg)
	}
	return fmt.Errorf("%s %s: %s; %s", flag, addr, lastPart(err), hint)
}

// lastPart returns the innermost cause of a network error, without the
// operation and addresses that wrap it.
func lastPart(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
