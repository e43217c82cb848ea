package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestPublishErrors(t *testing.T) {
	hub := startHub(t)
	cases := []struct {
		name  string
		stdin string
		args  []string
		want  string
	}{
		{"invalid JSON", "{nope", nil, "not valid JSON"},
		{"empty stdin", "", nil, "no JSON message on stdin"},
		{"blank stdin", " \n\t", nil, "no JSON message on stdin"},
		{"two documents", `{"a":1} {"b":2}`, nil, "more than one JSON document"},
		{"unknown flag", `{}`, []string{"--nope"}, "unknown flag --nope"},
		{"bad retry", `{}`, []string{"--retry", "soon"}, `--retry: "soon" is not a whole number`},
		{"negative retry", `{}`, []string{"--retry", "-5"}, "invalid retry"},
		{"bad channel", `{}`, []string{"--channel", "a b"}, "invalid channel"},
		{"newline in type", `{}`, []string{"--type", "a\nb"}, "invalid event type"},
		{"unreachable hub", `{}`, []string{"--url", "http://127.0.0.1:1"}, "cannot reach the hub"},
		{"not a URL", `{}`, []string{"--url", "ftp://x"}, "not an http(s) URL"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"publish", "--url", hub.URL}, c.args...)
			out, errOut, code := runCLI(t, c.stdin, args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", out)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ssehub: publish: ") || !strings.Contains(errOut, c.want) {
				t.Fatalf("stderr %q, want one line 'ssehub: publish: ...%s...'", errOut, c.want)
			}
		})
	}
}

func TestHubRefusalIsOneLine(t *testing.T) {
	hub := startHub(t, "--max-message-bytes", "10")
	_, errOut, code := runCLI(t, `"this is longer than ten bytes"`, "publish", "--url", hub.URL)
	if code == 0 || !strings.Contains(errOut, "(413)") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("exit %d, stderr %q; want a one-line 413 refusal", code, errOut)
	}
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"publish", "--help"}, {"subscribe", "-h"}} {
		out, errOut, code := runCLI(t, "", args...)
		if code != 0 || !strings.Contains(out, "Usage") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errOut)
		}
	}
	out, _, _ := runCLI(t, "", "serve", "--help")
	for _, want := range []string{"--addr", "SSEHUB_ADDR", "default 127.0.0.1:8080", "SSEHUB_BROKER"} {
		if !strings.Contains(out, want) {
			t.Errorf("serve --help lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := runCLI(t, "", "frobnicate"); code == 0 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut)
	}
}

func TestEnvironmentTwins(t *testing.T) {
	cmd := exec.Command(binary, "serve")
	cmd.Env = append(cmd.Environ(), "SSEHUB_ADDR=127.0.0.1:0", "SSEHUB_HEARTBEAT=soon")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "SSEHUB_HEARTBEAT") || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("bad env value: err %v, output %q; want one line naming SSEHUB_HEARTBEAT", err, out)
	}
}

// TestShutdownEndsStreams sends SIGTERM to a hub with open streams: every
// stream ends cleanly and the process exits 0.
func TestShutdownEndsStreams(t *testing.T) {
	hub := startHub(t)
	var bodies []io.ReadCloser
	for i := range 20 {
		resp, err := http.Get(hub.URL + "/sse?channel=c" + strconv.Itoa(i%3))
		if err != nil {
			t.Fatal(err)
		}
		bufio.NewReader(resp.Body).ReadString('\n') // the stream is open
		bodies = append(bodies, resp.Body)
	}
	if err := hub.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, b := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer b.Close()
			if _, err := io.Copy(io.Discard, b); err != nil {
				t.Errorf("stream ended with %v, want a clean end", err)
			}
		}()
	}
	wg.Wait()
	select {
	case <-hub.done:
	case <-time.After(30 * time.Second):
		t.Fatal("hub did not exit after SIGTERM")
	}
	if code := hub.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM:\n%s", code, hub.log)
	}
}

// TestSubscribeResumes cuts the subscriber's connection while events are
// published: the CLI reconnects with its last event id and prints every
// event exactly once, in order.
func TestSubscribeResumes(t *testing.T) {
	hub := startHub(t, "--retry", "50ms")
	proxy := newCutProxy(t, strings.TrimPrefix(hub.URL, "http://"))

	const total = 30
	sub := exec.Command(binary, "subscribe", "--url", "http://"+proxy.addr, "--channel", "r", "--count", strconv.Itoa(total), "--quiet")
	var out bytes.Buffer
	sub.Stdout = &out
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	hub.waitLog(t, "stream opened", 1)

	for i := range total {
		if i == 10 || i == 20 {
			proxy.cut()
		}
		if _, errOut, code := runCLI(t, fmt.Sprintf(`{"n":%d}`, i), "publish", "--url", hub.URL, "--channel", "r"); code != 0 {
			t.Fatalf("publish %d: %s", i, errOut)
		}
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("subscribe: %v", err)
		}
	case <-time.After(60 * time.Second):
		sub.Process.Kill()
		t.Fatalf("subscribe did not get %d events; got:\n%s", total, out.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != total {
		t.Fatalf("got %d lines, want %d:\n%s", len(lines), total, out.String())
	}
	for i, l := range lines {
		if !strings.Contains(l, fmt.Sprintf(`"data":{"n":%d}`, i)) {
			t.Fatalf("line %d is %s, want event n=%d", i, l, i)
		}
	}
	if proxy.conns() < 3 {
		t.Fatalf("the subscriber connected %d times, want at least 3 (two cuts)", proxy.conns())
	}
}

// cutProxy forwards TCP connections to a target and can cut them all.
type cutProxy struct {
	addr   string
	target string
	mu     sync.Mutex
	open   []net.Conn
	total  int
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String(), target: target}
	t.Cleanup(func() { ln.Close(); p.cut() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.open = append(p.open, c, u)
			p.total++
			p.mu.Unlock()
			go func() { io.Copy(u, c); u.Close() }()
			go func() { io.Copy(c, u); c.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.open {
		c.Close()
	}
	p.open = nil
}

func (p *cutProxy) conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

// TestPublishFormats: --format text sends stdin less one final newline as a
// JSON string, --format lines the list of its lines as `flask sse publish`
// does (each keeping its newline), and json, the default, the document.
func TestPublishFormats(t *testing.T) {
	hub := startHub(t)
	events := openEvents(t, hub.URL+"/sse?channel=formats", "")
	hub.waitLog(t, "stream opened", 1)
	cases := []struct {
		format, stdin, data string
	}{
		{"json", "{\"code\": \"ACK\"}\n", `{"code":"ACK"}`},
		{"text", "line1\nline2\n", `"line1\nline2"`},
		{"text", "a <b> & \"c\"\r\n\n", `"a <b> & \"c\"\r\n"`},
		{"text", "", `""`},
		{"lines", "{\"code\": \"ACK\"}\n", `["{\"code\": \"ACK\"}\n"]`},
		{"lines", "one\r\ntwo\rthree", `["one\n","two\n","three"]`},
		{"lines", "", `[]`},
	}
	for _, c := range cases {
		out, errOut, code := runCLI(t, c.stdin, "publish", "--url", hub.URL, "--channel", "formats", "--format", c.format)
		if code != 0 {
			t.Fatalf("--format %s: exit %d, %s", c.format, code, errOut)
		}
		if e := events.next(t); e.Data != c.data || e.LastEventID != strings.TrimSpace(out) {
			t.Fatalf("--format %s of %q: data %s id %q, want %s id %q", c.format, c.stdin, e.Data, e.LastEventID, c.data, out)
		}
	}
	for _, args := range [][]string{{"--format", "yaml"}, {"--format", "text"}} {
		_, errOut, code := runCLI(t, "\xff\n", append([]string{"publish", "--url", hub.URL}, args...)...)
		if code == 0 || strings.Count(errOut, "\n") != 1 {
			t.Fatalf("publish %v of invalid input: exit %d, stderr %q; want a one-line error", args, code, errOut)
		}
	}
}
