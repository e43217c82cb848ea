package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// binary is the ssehub executable the end-to-end tests run.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ssehub-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ssehub")
	// The binary is built with the race detector, which by default waits a
	// second at exit; a race it finds still makes it exit non-zero.
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	build := exec.Command("go", "build", "-race", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ssehub:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hubProcess is a running `ssehub serve`.
type hubProcess struct {
	cmd  *exec.Cmd
	URL  string
	done chan struct{}
	log  *syncBuffer
	// logged gets a value, without blocking, after each log line.
	logged chan struct{}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var listenRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startHub runs `ssehub serve` on a free loopback port and waits until it
// listens.
func startHub(t *testing.T, args ...string) *hubProcess {
	t.Helper()
	return startHubEnv(t, nil, args...)
}

// startHubEnv is startHub with env added to the hub's environment.
func startHubEnv(t *testing.T, env []string, args ...string) *hubProcess {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &hubProcess{cmd: cmd, done: make(chan struct{}), log: &syncBuffer{}, logged: make(chan struct{}, 1)}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.log.Write([]byte(line + "\n"))
			select {
			case p.logged <- struct{}{}:
			default:
			}
			if m := listenRE.FindStringSubmatch(line); m != nil {
				addr <- m[1]
			}
		}
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.done
	})
	select {
	case a := <-addr:
		p.URL = "http://" + a
	case <-p.done:
		t.Fatalf("ssehub serve exited before listening:\n%s", p.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("ssehub serve did not listen:\n%s", p.log)
	}
	return p
}

// runCLI runs the binary with stdin and returns stdout, stderr and the exit code.
func runCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	return runCLIEnv(t, nil, stdin, args...)
}

// runCLIEnv is runCLI with env added to the environment.
func runCLIEnv(t *testing.T, env []string, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestServePublishSubscribe(t *testing.T) {
	hub := startHub(t)

	// A raw reader, as curl -N would see the stream.
	resp, err := http.Get(hub.URL + "/sse?channel=cool_channel")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw := bufio.NewReader(resp.Body)
	// The retry field, flushed at connect with no blank line after it; no
	// position frame, which only browsers and clients that ask get.
	if first, _ := raw.ReadString('\n'); first != "retry: 3000\n" {
		t.Fatalf("first line %q, want the retry field flushed at connect", first)
	}
	// A browser gets the stream's position, an id field alone, so that a
	// reconnect before the first event resumes from there.
	req, err := http.NewRequest(http.MethodGet, hub.URL+"/sse?channel=cool_channel", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64)")
	browser, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer browser.Body.Close()
	br := bufio.NewReader(browser.Body)
	if first, _ := br.ReadString('\n'); first != "retry: 3000\n" {
		t.Fatalf("first line for a browser %q", first)
	}
	if pos, _ := br.ReadString('\n'); !regexp.MustCompile(`^id: \d{16}\n$`).MatchString(pos) {
		t.Fatalf("second line for a browser %q, want an id alone", pos)
	}
	if blank, _ := br.ReadString('\n'); blank != "\n" {
		t.Fatalf("third line for a browser %q, want the blank line that sets the id", blank)
	}

	// The subscriber CLI, in the background until it has two events.
	sub := exec.Command(binary, "subscribe", "--url", hub.URL, "--channel", "cool_channel", "--count", "2")
	var subOut, subErr bytes.Buffer
	sub.Stdout, sub.Stderr = &subOut, &subErr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	subDone := make(chan error, 1)
	go func() { subDone <- sub.Wait() }()
	hub.waitLog(t, "stream opened", 3)

	out, errOut, code := runCLI(t, `{"code": "ACK", "msg": "cool message"}`,
		"publish", "--url", hub.URL, "--channel", "cool_channel", "--type", "cool", "--id", "12345", "--retry", "6000")
	if code != 0 || strings.TrimSpace(out) != "12345" {
		t.Fatalf("publish: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	out, errOut, code = runCLI(t, "{\"text\": \"two\\nlines \u00e9\u2028\"}\n", "publish", "--url", hub.URL, "--channel", "cool_channel")
	assigned := strings.TrimSpace(out)
	if code != 0 || len(assigned) < 16 {
		t.Fatalf("publish: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	want := "id: 12345\nevent: cool\nretry: 6000\ndata: {\"code\":\"ACK\",\"msg\":\"cool message\"}\n\n" +
		"id: " + assigned + "\ndata: {\"text\":\"two\\nlines \u00e9\u2028\"}\n\n"
	got := make([]byte, len(want))
	if _, err := io.ReadFull(raw, got); err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("stream bytes:\n%q\nwant:\n%q", got, want)
	}

	select {
	case err := <-subDone:
		if err != nil {
			t.Fatalf("subscribe: %v, stderr %q", err, subErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("subscribe did not exit after two events")
	}
	lines := strings.Split(strings.TrimSpace(subOut.String()), "\n")
	wantLines := []string{
		`{"id":"12345","event":"cool","data":{"code":"ACK","msg":"cool message"}}`,
		`{"id":"` + assigned + `","event":"message","data":{"text":"two\nlines é` + "\u2028" + `"}}`,
	}
	if len(lines) != 2 || lines[0] != wantLines[0] || lines[1] != wantLines[1] {
		t.Fatalf("subscribe printed:\n%s\nwant:\n%s", subOut.String(), strings.Join(wantLines, "\n"))
	}
}

// waitLog waits until the hub has logged n lines holding msg.
func (p *hubProcess) waitLog(t *testing.T, msg string, n int) {
	t.Helper()
	for {
		select {
		case <-p.logged:
		case <-time.After(30 * time.Second):
			t.Fatalf("hub did not log %q %d times:\n%s", msg, n, p.log)
		}
		if strings.Count(p.log.String(), "msg=\""+msg+"\"") >= n {
			return
		}
	}
}
