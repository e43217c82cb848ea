// Package deploy_test checks the deployment files in this directory
// against real servers.
package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// nginxBinary returns the nginx executable, skipping the test when there is
// none, except under CI=true where it must be there.
func nginxBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/usr/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("nginx not found; scripts/test installs it (Debian: apt-get install nginx-light)")
	}
	t.Skip("nginx not found; install it (Debian: apt-get install nginx-light) to run this test")
	return ""
}

// siteConfig returns deploy/nginx.conf with its upstream, listen address
// and read timeout replaced, after checking that docs/deploy.md shows the
// file as it is.
func siteConfig(t *testing.T, upstream, listen string, edits ...string) string {
	t.Helper()
	raw, err := os.ReadFile("nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../docs/deploy.md")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(doc, raw) {
		t.Fatal("docs/deploy.md does not show deploy/nginx.conf verbatim")
	}
	conf := string(raw)
	edits = append([]string{
		"server 127.0.0.1:8080;", "server " + upstream + ";",
		"listen 80;", "listen " + listen + ";",
	}, edits...)
	for i := 0; i+1 < len(edits); i += 2 {
		if strings.Count(conf, edits[i]) != 1 {
			t.Fatalf("deploy/nginx.conf holds %q %d times, want once", edits[i], strings.Count(conf, edits[i]))
		}
		conf = strings.Replace(conf, edits[i], edits[i+1], 1)
	}
	return conf
}

// startNginx runs nginx in the foreground with the site configuration
// conf, from a temporary prefix, and returns once it accepts connections on
// listen.
func startNginx(t *testing.T, conf, listen string) {
	t.Helper()
	bin := nginxBinary(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "site.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    include %[1]s/site.conf;
}
`, dir)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", "stderr")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt) // nginx's fast shutdown
		<-exited
	})

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(15 * time.Second)
	for {
		c, err := net.Dial("tcp", listen)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-tick.C:
		case <-exited:
			t.Fatalf("nginx exited: %s", stderr.String())
		case <-deadline:
			t.Fatalf("nginx does not accept connections on %s: %s", listen, stderr.String())
		}
	}
}

// freeAddr returns a loopback address with a port free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// proxiedHub starts a hub and nginx in front of it, and returns the hub and
// nginx's URL.
func proxiedHub(t *testing.T, cfg ssehub.Config, edits ...string) (*ssehub.Hub, string) {
	t.Helper()
	nginxBinary(t)
	hub, err := ssehub.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(hub)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})
	listen := freeAddr(t)
	startNginx(t, siteConfig(t, srv.Listener.Addr().String(), listen, edits...), listen)
	return hub, "http://" + listen
}

// openStream opens a stream through nginx. Reads fail once ctx ends, so a
// proxy that holds events back fails the test instead of hanging it.
func openStream(t *testing.T, ctx context.Context, url string) (*sse.Decoder, *http.Response) {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/sse?channel=n", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /sse through nginx: %s, Content-Type %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	return sse.NewDecoder(resp.Body), resp
}

// stepTimeout bounds each wait for an event through nginx: far longer than
// delivery takes, far shorter than a buffer that never fills.
const stepTimeout = 10 * time.Second

// TestNginxEventsOneByOne publishes events one at a time and reads each
// through nginx before publishing the next: nginx holds nothing back.
func TestNginxEventsOneByOne(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		edits []string
	}{
		{"config as shipped", nil},
		// With buffering on, and HTTP/1.0 to the hub so that nginx gets no
		// chunks to pass on one by one, the hub's X-Accel-Buffering: no still
		// turns buffering off for the stream.
		{"X-Accel-Buffering honoured", []string{
			"proxy_buffering off;", "proxy_buffering on;",
			"location /sse {\n        proxy_pass http://ssehub;\n        proxy_http_version 1.1;",
			"location /sse {\n        proxy_pass http://ssehub;\n        proxy_http_version 1.0;",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			hub, url := proxiedHub(t, ssehub.Config{Heartbeat: -1}, c.edits...)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			timer := time.AfterFunc(stepTimeout, cancel)
			d, resp := openStream(t, ctx, url)
			timer.Stop()
			if resp.Header.Get("X-Accel-Buffering") != "" {
				t.Errorf("nginx passed X-Accel-Buffering on to the client")
			}
			for i := range 20 {
				id, err := hub.Publish(ctx, ssehub.Message{Channel: "n", Data: json.RawMessage(strconv.Itoa(i))})
				if err != nil {
					t.Fatal(err)
				}
				timer := time.AfterFunc(stepTimeout, cancel)
				e, err := d.Next()
				timer.Stop()
				if err != nil {
					t.Fatalf("event %d not readable through nginx before the next publish: %v", i, err)
				}
				if e.Data != strconv.Itoa(i) || e.LastEventID != id {
					t.Fatalf("event %d: got %+v, want data %d id %s", i, e, i, id)
				}
			}
		})
	}
}

// TestNginxHeartbeatsKeepStreamOpen keeps a stream idle for longer than
// nginx's read timeout (2s): with heartbeats every 500ms it stays open and
// still delivers; without them nginx ends it.
func TestNginxHeartbeatsKeepStreamOpen(t *testing.T) {
	t.Parallel()
	timeout := []string{"proxy_read_timeout 60s;", "proxy_read_timeout 2s;"}

	t.Run("heartbeats", func(t *testing.T) {
		t.Parallel()
		hub, url := proxiedHub(t, ssehub.Config{Heartbeat: 500 * time.Millisecond}, timeout...)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		d, _ := openStream(t, ctx, url)
		comments := make(chan struct{}, 100)
		d.OnComment = func(string) { comments <- struct{}{} }
		type result struct {
			e   sse.Event
			err error
		}
		got := make(chan result, 1)
		go func() {
			e, err := d.Next()
			got <- result{e, err}
		}()
		// Seven heartbeats: 3.5s of an idle stream, past the 2s timeout.
		for range 7 {
			select {
			case <-comments:
			case r := <-got:
				t.Fatalf("stream ended while idle: %+v, %v", r.e, r.err)
			case <-ctx.Done():
				t.Fatal("no heartbeats through nginx")
			}
		}
		if _, err := hub.Publish(ctx, ssehub.Message{Channel: "n", Data: json.RawMessage(`"after"`)}); err != nil {
			t.Fatal(err)
		}
		select {
		case r := <-got:
			if r.err != nil || r.e.Data != `"after"` {
				t.Fatalf("after the idle spell: %+v, %v", r.e, r.err)
			}
		case <-ctx.Done():
			t.Fatal("event not delivered after the idle spell")
		}
	})

	t.Run("no heartbeats", func(t *testing.T) {
		t.Parallel()
		_, url := proxiedHub(t, ssehub.Config{Heartbeat: -1}, timeout...)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		d, _ := openStream(t, ctx, url)
		_, err := d.Next()
		if err == nil {
			t.Fatal("an event arrived on an idle stream")
		}
		if ctx.Err() != nil {
			t.Fatalf("nginx did not end the idle stream: %v", err)
		}
	})
}
