package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/testcert"
)

// refusedAddr returns a loopback address where nothing listens.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TestMistakesAnswerWithTheFix: each mistake a new user makes exits
// non-zero with one line that names the fix.
func TestMistakesAnswerWithTheFix(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { busy.Close() })
	cert, key := testcert.Write(t)
	tlsHub := startHub(t, "--tls-cert", cert, "--tls-key", key)
	plainHub := startHub(t)
	httpsAddr := strings.TrimPrefix(tlsHub.URL, "http://")
	shortSecret := writeFile(t, "secret", "too short\n")

	cases := []struct {
		name  string
		env   []string
		args  []string
		stdin string
		want  []string
	}{
		{"flag typo", nil, []string{"serve", "--adr", "127.0.0.1:0"}, "",
			[]string{"unknown flag --adr; did you mean --addr?", "'ssehub serve --help'"}},
		{"single dash typo", nil, []string{"serve", "-hearbeat", "1s"}, "",
			[]string{"unknown flag --hearbeat; did you mean --heartbeat?"}},
		{"flag of another command", nil, []string{"publish", "--drain", "1s"}, "{}",
			[]string{"unknown flag --drain for publish; it is a flag of serve or bench"}},
		{"command typo", nil, []string{"serv"}, "",
			[]string{`unknown command "serv"; did you mean serve?`}},
		{"duration without a unit", nil, []string{"serve", "--heartbeat", "15"}, "",
			[]string{`--heartbeat: "15" is not a duration`, "as in 15s"}},
		{"duration in the environment", []string{"SSEHUB_RETRY=5000"}, []string{"serve"}, "",
			[]string{`SSEHUB_RETRY: "5000" is not a duration`, "as in 5000ms"}},
		{"not a duration", nil, []string{"serve", "--drain", "soon"}, "",
			[]string{`--drain: "soon" is not a duration: write one like 15s`}},
		{"boolean with a space", nil, []string{"serve", "--detach", "false"}, "",
			[]string{"--detach=false"}},
		{"log level", nil, []string{"serve", "--log-level", "loud"}, "",
			[]string{"use debug, info, warn or error"}},
		{"flag without its value", nil, []string{"serve", "--addr", "--broker", "memory:"}, "",
			[]string{"--addr needs a value first"}},
		{"address in use", nil, []string{"serve", "--addr", busy.Addr().String()}, "",
			[]string{"--addr " + busy.Addr().String(), "address already in use", "another process listens there"}},
		{"address without a port", nil, []string{"serve", "--addr", "8080"}, "",
			[]string{"write host:port, as in 127.0.0.1:8080"}},
		{"address of another machine", nil, []string{"serve", "--addr", "192.0.2.1:8080"}, "",
			[]string{"no network interface of this machine has that address"}},
		{"negative history", []string{"SSEHUB_HISTORY_SIZE=-1"}, []string{"serve"}, "",
			[]string{`SSEHUB_HISTORY_SIZE: "-1" must be 0 or more`}},
		{"publish to nothing", nil, []string{"publish", "--url", "http://" + refusedAddr(t)}, "{}",
			[]string{"nothing listens at", "is the hub running there (ssehub serve)?"}},
		{"publish over HTTP to HTTPS", nil, []string{"publish", "--url", tlsHub.URL}, "{}",
			[]string{"refused plain HTTP (400)", "use --url https://" + httpsAddr}},
		{"subscribe over HTTP to HTTPS", nil, []string{"subscribe", "--url", tlsHub.URL}, "",
			[]string{"Client sent an HTTP request to an HTTPS server", "use --url https://" + httpsAddr}},
		{"publish over HTTPS to HTTP", []string{"SSL_CERT_FILE=" + cert}, []string{"publish", "--url", strings.Replace(plainHub.URL, "http://", "https://", 1)}, "{}",
			[]string{"speaks plain HTTP, not HTTPS: use --url " + plainHub.URL}},
		{"publish to an untrusted certificate", nil, []string{"publish", "--url", strings.Replace(tlsHub.URL, "http://", "https://", 1)}, "{}",
			[]string{"SSL_CERT_FILE=cert.pem"}},
		{"publish without a token", nil, []string{"publish", "--url", startHub(t, "--publish-token", "a-publish-token-of-16-bytes").URL}, "{}",
			[]string{"(401)", "--token-file or --token"}},
		{"short secret", nil, []string{"token", "--secret-file", shortSecret}, "",
			[]string{"shorter than 32 bytes", "head -c 32 /dev/urandom | base64 > secret"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			out, errOut, code := runCLIEnv(t, c.env, c.stdin, c.args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q, stderr %q", out, errOut)
			}
			if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "ssehub: ") {
				t.Fatalf("stderr %q, want one line", errOut)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
		})
	}
}

// TestCommandLineHidesTheOtherFormsVariable: a token given on the command
// line wins over the token file a deployment sets, instead of clashing
// with it.
func TestCommandLineHidesTheOtherFormsVariable(t *testing.T) {
	hub := startHubEnv(t, []string{"SSEHUB_PUBLISH_TOKEN_FILE=" + writeFile(t, "unused", "")}, "--publish-token", "a-publish-token-of-16-bytes")
	out, errOut, code := runCLIEnv(t, []string{"SSEHUB_PUBLISH_TOKEN_FILE=/nonexistent"}, "{}",
		"publish", "--url", hub.URL, "--token", "a-publish-token-of-16-bytes")
	if code != 0 || strings.TrimSpace(out) == "" {
		t.Fatalf("publish: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	_, errOut, code = runCLIEnv(t, []string{"SSEHUB_PUBLISH_TOKEN=x", "SSEHUB_PUBLISH_TOKEN_FILE=y"}, "", "serve", "--addr", "127.0.0.1:0")
	if code == 0 || !strings.Contains(errOut, "give SSEHUB_PUBLISH_TOKEN or SSEHUB_PUBLISH_TOKEN_FILE, not both") {
		t.Fatalf("both forms in the environment: exit %d, stderr %q", code, errOut)
	}
}

// TestSubscribeSaysWhenNoHubAnswers: the first refused connection is
// explained on stderr, and subscribe keeps trying without repeating it.
func TestSubscribeSaysWhenNoHubAnswers(t *testing.T) {
	t.Parallel()
	addr := refusedAddr(t)
	cmd := exec.Command(binary, "subscribe", "--url", "http://"+addr)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	line, err := bufio.NewReader(stderr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connection refused", "nothing listens at " + addr, "is the hub running there", "retrying until interrupted"} {
		if !strings.Contains(line, want) {
			t.Errorf("first line %q lacks %q", line, want)
		}
	}
	if cmd.ProcessState != nil {
		t.Fatal("subscribe exited")
	}
}

// TestDeploymentEnvironment sets SSEHUB_* as docs/deploy.md tells
// operators to, for serve, and runs every command in that environment.
func TestDeploymentEnvironment(t *testing.T) {
	env := []string{
		"SSEHUB_RETRY=4s", "SSEHUB_DRAIN=20s", "SSEHUB_HEARTBEAT=15s", "SSEHUB_HISTORY_SIZE=500",
		"SSEHUB_HISTORY_AGE=30m", "SSEHUB_LOG_FORMAT=text", "SSEHUB_SHUTDOWN_TIMEOUT=10s",
		"SSEHUB_BROKER=memory:", "SSEHUB_TOKEN=left-from-an-earlier-version",
	}
	hub := startHubEnv(t, env)
	env = append(env, "SSEHUB_URL="+hub.URL)
	resp, err := http.Get(hub.URL + "/sse?channel=other")
	if err != nil {
		t.Fatal(err)
	}
	first, _ := bufio.NewReader(resp.Body).ReadString('\n')
	resp.Body.Close()
	if first != "retry: 4000\n" {
		t.Fatalf("first line of a stream %q, want the retry of SSEHUB_RETRY", first)
	}

	sub := exec.Command(binary, "subscribe", "--channel", "deploy", "--count", "1")
	sub.Env = append(os.Environ(), env...)
	var subOut, subErr bytes.Buffer
	sub.Stdout, sub.Stderr = &subOut, &subErr
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	hub.waitLog(t, "stream opened", 2) // the first was the check of retry above

	out, errOut, code := runCLIEnv(t, env, `{"ok": true}`, "publish", "--channel", "deploy", "--retry", "6000")
	if code != 0 || len(strings.TrimSpace(out)) < 16 {
		t.Fatalf("publish: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "no command reads SSEHUB_TOKEN; publish sends SSEHUB_PUBLISH_TOKEN") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("publish stderr %q, want one warning about SSEHUB_TOKEN", errOut)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("subscribe: %v, %s", err, subErr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("subscribe got no event")
	}
	if want := `"data":{"ok":true}`; !strings.Contains(subOut.String(), want) {
		t.Fatalf("subscribe printed %q, want %s", subOut.String(), want)
	}

	out, errOut, code = runCLIEnv(t, env, "", "bench", "--url", hub.URL, "--subscribers", "4", "--events", "20", "--settle", "10ms", "--json")
	var res struct{ Hub struct{ Deliveries int64 } }
	if code != 0 || json.Unmarshal([]byte(out), &res) != nil || res.Hub.Deliveries != 4*20 {
		t.Fatalf("bench: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

// TestUnknownVariableWarning: a misspelt SSEHUB_* variable is named with
// the one meant; the command still runs.
func TestUnknownVariableWarning(t *testing.T) {
	t.Parallel()
	out, errOut, code := runCLIEnv(t, []string{"SSEHUB_HISTORY_SIZ=10"}, "", "version")
	if code != 0 || !strings.HasPrefix(out, "ssehub ") {
		t.Fatalf("version: exit %d, stdout %q", code, out)
	}
	if want := "ssehub: warning: no command reads SSEHUB_HISTORY_SIZ; did you mean SSEHUB_HISTORY_SIZE?\n"; errOut != want {
		t.Fatalf("stderr %q, want %q", errOut, want)
	}
}

// openedHandler is a slog.Handler that signals each "stream opened" record.
type openedHandler struct{ opened chan<- struct{} }

func (h openedHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h openedHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h openedHandler) WithGroup(string) slog.Handler            { return h }
func (h openedHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "stream opened" {
		h.opened <- struct{}{}
	}
	return nil
}

// TestStreamURLOfAnEmbeddedHub: publish and subscribe take the URL of a
// hub that a Go program mounts on a path of its own, as README.md's
// library example does (/events), instead of appending /sse or /publish.
func TestStreamURLOfAnEmbeddedHub(t *testing.T) {
	t.Parallel()
	opened := make(chan struct{}, 1)
	hub, err := ssehub.New(ssehub.Config{Logger: slog.New(openedHandler{opened})})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /events", hub.StreamHandler())
	mux.Handle("POST /events", hub.PublishHandler())
	srv := httptest.NewServer(mux)
	t.Cleanup(func() {
		hub.Close(context.Background())
		srv.Close()
	})

	sub := exec.Command(binary, "subscribe", "--url", srv.URL+"/events?channel=orders", "--count", "1")
	var out, errOut bytes.Buffer
	sub.Stdout, sub.Stderr = &out, &errOut
	if err := sub.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sub.Wait() }()
	select {
	case <-opened:
	case err := <-done:
		t.Fatalf("subscribe exited: %v, %s", err, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("subscribe did not open a stream")
	}
	id, pubErr, code := runCLI(t, `{"order": 42}`, "publish", "--url", srv.URL+"/events", "--channel", "orders")
	if code != 0 {
		t.Fatalf("publish: exit %d, %s", code, pubErr)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("subscribe: %v, %s", err, errOut.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("subscribe did not exit after its event")
	}
	want := `{"id":"` + strings.TrimSpace(id) + `","event":"message","data":{"order":42}}` + "\n"
	if out.String() != want {
		t.Fatalf("subscribe printed %q, want %q", out.String(), want)
	}
}
