package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ssehub/ssehub/internal/sse"
	"github.com/ssehub/ssehub/internal/testcert"
)

// preflight sends a CORS preflight for a stream from origin and returns
// the status and the allowed origin.
func preflight(t *testing.T, url, origin string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodOptions, url+"/sse?channel=c", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "GET")
	req.Header.Set("Access-Control-Request-Headers", "last-event-id")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res.StatusCode, res.Header.Get("Access-Control-Allow-Origin")
}

func TestServeCORSOrigins(t *testing.T) {
	hub := startHub(t, "--cors-origin", "https://app.example", "--cors-origin", "http://127.0.0.1:5001")
	for _, tc := range []struct {
		origin string
		status int
		allow  string
	}{
		{"https://app.example", http.StatusNoContent, "https://app.example"},
		{"http://127.0.0.1:5001", http.StatusNoContent, "http://127.0.0.1:5001"},
		{"https://evil.example", http.StatusForbidden, ""},
	} {
		if status, allow := preflight(t, hub.URL, tc.origin); status != tc.status || allow != tc.allow {
			t.Errorf("preflight from %s: %d, allow %q; want %d, %q", tc.origin, status, allow, tc.status, tc.allow)
		}
	}

	// The stream itself names the allowed origin and allows credentials.
	req, _ := http.NewRequest(http.MethodGet, hub.URL+"/sse?channel=c", nil)
	req.Header.Set("Origin", "https://app.example")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.Header.Get("Access-Control-Allow-Origin") != "https://app.example" || res.Header.Get("Access-Control-Allow-Credentials") != "true" {
		t.Errorf("stream CORS headers: %v", res.Header)
	}
}

func TestServeCORSOriginsFromEnvironment(t *testing.T) {
	t.Setenv("SSEHUB_CORS_ORIGIN", "https://a.example, https://b.example")
	hub := startHub(t)
	for _, origin := range []string{"https://a.example", "https://b.example"} {
		if status, allow := preflight(t, hub.URL, origin); status != http.StatusNoContent || allow != origin {
			t.Errorf("preflight from %s: %d, allow %q", origin, status, allow)
		}
	}
	if status, _ := preflight(t, hub.URL, "https://c.example"); status != http.StatusForbidden {
		t.Errorf("preflight from an origin not listed: %d, want 403", status)
	}
}

func TestServeWebFlagErrors(t *testing.T) {
	cert, key := testcert.Write(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--cors-origin", "*"}, "--cors-origin"},
		{[]string{"--cors-origin", "https://app.example/path"}, "--cors-origin"},
		{[]string{"--tls-cert", cert}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-key", key}, "--tls-cert and --tls-key go together"},
		{[]string{"--tls-cert", cert, "--tls-key", filepath.Join(t.TempDir(), "missing.pem")}, "--tls-key"},
		{[]string{"--tls-cert", key, "--tls-key", key}, "--tls-cert"},
	} {
		_, errOut, code := runCLI(t, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, tc.args...)...)
		if code == 0 || !strings.Contains(errOut, tc.want) || strings.Count(errOut, "\n") != 1 {
			t.Errorf("serve %q: exit %d, stderr %q; want one line with %q", tc.args, code, errOut, tc.want)
		}
	}
}

// TestServeTLS serves HTTPS: clients that speak HTTP/2 get streams over it.
func TestServeTLS(t *testing.T) {
	cert, key := testcert.Write(t)
	hub := startHub(t, "--tls-cert", cert, "--tls-key", key)
	url := "https://" + strings.TrimPrefix(hub.URL, "http://")
	if !strings.Contains(hub.log.String(), "url="+url) {
		t.Errorf("log does not show the https URL %s:\n%s", url, hub.log)
	}

	pemCert, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pemCert)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		ForceAttemptHTTP2: true,
	}}
	defer client.CloseIdleConnections()

	res, err := client.Get(url + "/sse?channel=tls")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.ProtoMajor != 2 || res.Header.Get("Connection") != "" {
		t.Fatalf("stream over %s with Connection %q, want HTTP/2 and none", res.Proto, res.Header.Get("Connection"))
	}
	pub, err := client.Post(url+"/publish", "application/json", strings.NewReader(`{"channel":"tls","type":"cool","data":{"secure":"✓"}}`))
	if err != nil {
		t.Fatal(err)
	}
	var out struct{ ID string }
	json.NewDecoder(pub.Body).Decode(&out)
	pub.Body.Close()
	ev, err := sse.NewDecoder(bufio.NewReader(res.Body)).Next()
	if err != nil || ev.Type != "cool" || ev.Data != `{"secure":"✓"}` || ev.LastEventID != out.ID {
		t.Fatalf("event %+v, %v; want the published one with id %s", ev, err, out.ID)
	}
}

// TestShutdownClosesFreshConns: a connection that never sent a request,
// like the spare ones browsers open, does not hold up shutdown (Shutdown
// alone would wait 5 s for it, past --shutdown-timeout).
func TestShutdownClosesFreshConns(t *testing.T) {
	hub := startHub(t, "--shutdown-timeout", "2s")
	addr := strings.TrimPrefix(hub.URL, "http://")
	fresh, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer fresh.Close()
	// The server accepts in order: once a later connection is served,
	// the fresh one has been accepted.
	res, err := http.Get(hub.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()

	if err := hub.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if n, err := fresh.Read(make([]byte, 1)); err == nil {
		t.Errorf("read %d bytes from a connection that sent no request", n)
	}
	<-hub.done
	if code := hub.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, hub.log)
	}
}
