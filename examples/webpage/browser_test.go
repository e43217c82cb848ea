package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/redistest"
	"github.com/ssehub/ssehub/internal/testcert"
)

// One headless Chromium serves every browser test of the package; each test
// opens its own tab.
var (
	browserCtx context.Context
	browserErr error
	// ssehubBinary is the ssehub command, built for the browser tests.
	ssehubBinary string
	buildErr     error
)

func TestMain(m *testing.M) { os.Exit(runTests(m)) }

func runTests(m *testing.M) int {
	path, err := exec.LookPath("chromium")
	if err != nil {
		browserErr = err
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "ssehub-chromium-")
	if err != nil {
		browserErr = err
		return m.Run()
	}
	defer os.RemoveAll(dir)
	ssehubBinary = filepath.Join(dir, "ssehub")
	if out, err := exec.Command("go", "build", "-o", ssehubBinary, "github.com/ssehub/ssehub/cmd/ssehub").CombinedOutput(); err != nil {
		buildErr = fmt.Errorf("building ssehub: %v\n%s", err, out)
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		// The HTTP/2 test serves a certificate it makes itself.
		chromedp.IgnoreCertErrors,
	)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	if err := chromedp.Do(bctx); err != nil {
		browserErr = fmt.Errorf("starting %s: %w", path, err)
	} else {
		browserCtx = bctx
	}
	return m.Run()
}

// waitTimeout bounds each wait for the page to reach a state.
const waitTimeout = 15 * time.Second

// newTab opens a browser tab for t, skipping t when there is no browser
// (failing under CI=true, where the test script installs one).
func newTab(t *testing.T) context.Context {
	t.Helper()
	if browserErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("browser tests need Debian's chromium: %v", browserErr)
		}
		t.Skipf("skipping browser test: %v (apt-get install chromium)", browserErr)
	}
	tab, cancel := chromedp.NewContext(browserCtx)
	t.Cleanup(cancel)
	// The first action opens the tab and binds it to its context, so it
	// runs without a deadline.
	if err := chromedp.Do(tab); err != nil {
		t.Fatal(err)
	}
	ctx, cancelTimeout := context.WithTimeout(tab, 2*time.Minute)
	t.Cleanup(cancelTimeout)
	return ctx
}

func navigate(t *testing.T, ctx context.Context, url string) {
	t.Helper()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		t.Fatalf("navigate to %s: %v", url, err)
	}
}

// pageState is what the example page shows.
type pageState struct {
	Status string   `json:"status"`
	Items  []string `json:"items"`
}

func readPage(t *testing.T, ctx context.Context) pageState {
	t.Helper()
	st, err := chromedp.Run(ctx, chromedp.Evaluate[pageState](`({
		status: document.getElementById("status").textContent,
		items: Array.from(document.querySelectorAll("#messages li"), li => li.textContent),
	})`))
	if err != nil {
		t.Fatalf("reading the page: %v", err)
	}
	return st
}

// waitFor polls the JavaScript predicate in the page until it holds.
func waitFor(t *testing.T, ctx context.Context, predicate string) {
	t.Helper()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](predicate,
		chromedp.WithPollingInterval(20*time.Millisecond),
		chromedp.WithPollingTimeout(waitTimeout)))
	if err != nil {
		t.Fatalf("waiting for %s: %v", predicate, err)
	}
}

func waitStatus(t *testing.T, ctx context.Context, status string) {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf(`document.getElementById("status").textContent === %q`, status))
}

func waitItems(t *testing.T, ctx context.Context, n int) []string {
	t.Helper()
	waitFor(t, ctx, fmt.Sprintf(`document.querySelectorAll("#messages li").length >= %d`, n))
	return readPage(t, ctx).Items
}

// streamRequest records one request for /sse as the server saw it.
type streamRequest struct {
	proto       int
	origin      string
	lastEventID string
}

// testServer runs the example's handler through serve, as run does.
type testServer struct {
	URL string
	hub *ssehub.Hub

	mu       sync.Mutex
	requests []streamRequest

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan error
	onStop   func()
}

// serverOptions configure startServer.
type serverOptions struct {
	ln          net.Listener // nil: a free loopback port
	broker      ssehub.Broker
	onStop      func() // called once the server has stopped
	noHub       bool   // serve only the page
	hubOrigin   string // the page's hub when noHub
	corsOrigins []string
	tls         bool
	extra       map[string]string // more pages: path → HTML
}

func startServer(t *testing.T, o serverOptions) *testServer {
	t.Helper()
	ln := o.ln
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
	}
	s := &testServer{done: make(chan error, 1), onStop: o.onStop}
	if !o.noHub {
		// A short retry keeps reconnects in the tests quick. Detached
		// streams, as in the example, serve HTTP/1.1; HTTP/2 streams
		// stay in their handlers.
		hub, err := ssehub.New(ssehub.Config{Broker: o.broker, Retry: 200 * time.Millisecond, Detach: true})
		if err != nil {
			t.Fatal(err)
		}
		s.hub = hub
	}
	handler, err := newHandler(s.hub, o.hubOrigin, o.corsOrigins)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", handler)
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, streamRequest{r.ProtoMajor, r.Header.Get("Origin"), r.Header.Get("Last-Event-ID")})
		s.mu.Unlock()
		handler.ServeHTTP(w, r)
	})
	for path, html := range o.extra {
		mux.HandleFunc("GET "+path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, html)
		})
	}
	var tlsConfig *tls.Config
	scheme := "http"
	if o.tls {
		certFile, keyFile := testcert.Write(t)
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			t.Fatal(err)
		}
		tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		scheme = "https"
	}
	s.URL = scheme + "://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	log := slog.New(slog.DiscardHandler)
	go func() { s.done <- serve(ctx, ln, mux, s.hub, tlsConfig, log) }()
	t.Cleanup(func() { s.stop(t) })
	return s
}

// stop shuts the server down as a SIGTERM would and waits until it has.
func (s *testServer) stop(t *testing.T) {
	t.Helper()
	s.stopOnce.Do(func() {
		s.cancel()
		if err := <-s.done; err != nil {
			t.Errorf("serve %s: %v", s.URL, err)
		}
		if s.onStop != nil {
			s.onStop()
		}
	})
}

func (s *testServer) streamRequests() []streamRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]streamRequest(nil), s.requests...)
}

// publish publishes through the hub's HTTP API and returns the event id.
func publish(t *testing.T, baseURL, channel, typ, data string) string {
	t.Helper()
	// The data goes into the body as it is: json.Marshal would escape
	// markup characters and U+2028 in it.
	head, err := json.Marshal(map[string]string{"channel": channel, "type": typ})
	if err != nil {
		t.Fatal(err)
	}
	body := string(head[:len(head)-1]) + `,"data":` + data + "}"
	res, err := http.Post(baseURL+"/publish", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out struct{ ID, Error string }
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("publish %s: status %d, %+v, %v", data, res.StatusCode, out, err)
	}
	return out.ID
}

// publishCLI publishes with the ssehub command, as the README shows, and
// returns the event id it prints.
func publishCLI(t *testing.T, baseURL, channel, typ, data string) string {
	t.Helper()
	args := []string{"--url", baseURL, "--channel", channel}
	if typ != "" {
		args = append(args, "--type", typ)
	}
	return runPublishCLI(t, data, args...)
}

// runPublishCLI runs ssehub publish with args and data on stdin, and
// returns the event id it prints.
func runPublishCLI(t *testing.T, data string, args ...string) string {
	t.Helper()
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	args = append([]string{"publish"}, args...)
	cmd := exec.Command(ssehubBinary, args...)
	cmd.Stdin = strings.NewReader(data)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ssehub %q: %v: %s", args, err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// consoleLog is one console.log call of the page: its arguments, decoded.
type consoleLog []any

// watchConsole starts collecting the page's console.log calls; call it
// before navigating.
func watchConsole(ctx context.Context) <-chan consoleLog {
	out := make(chan consoleLog, 100)
	messages := chromedp.Console(ctx)
	go func() {
		defer close(out)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type != chromedp.ConsoleLog {
				continue
			}
			var args consoleLog
			for _, a := range m.Args {
				var v any
				if err := json.Unmarshal(a.Value, &v); err != nil {
					v = a.Description
				}
				args = append(args, v)
			}
			select {
			case out <- args:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func nextLog(t *testing.T, logs <-chan consoleLog) consoleLog {
	t.Helper()
	select {
	case l, ok := <-logs:
		if !ok {
			t.Fatal("the page's console is gone")
		}
		return l
	case <-time.After(waitTimeout):
		t.Fatal("no console.log call from the page")
		return nil
	}
}

// checkData checks that data as the page shows it is the JSON that was
// published: the same compact text, and the same value.
func checkData(t *testing.T, got, published string) {
	t.Helper()
	want, err := ssehub.CompactJSON([]byte(published))
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("data in the page:\n got %q\nwant %q", got, want)
	}
	var g, w any
	if err := json.Unmarshal([]byte(got), &g); err != nil {
		t.Errorf("data in the page is not JSON: %v", err)
		return
	}
	json.Unmarshal([]byte(published), &w)
	if fmt.Sprint(g) != fmt.Sprint(w) {
		t.Errorf("data in the page decodes to %v, want %v", g, w)
	}
}

const coolPrefix = "type: cool data: "

// pageEvents are published to the example page: typed ones go to the list,
// plain ones to the console. The JSON holds non-ASCII text, escaped and raw
// line breaks inside strings, U+2028 (not a line break for EventSource) and
// markup that must stay text.
var pageEvents = []struct {
	cli       bool // published with `ssehub publish`, else with POST /publish
	typ, data string
}{
	{false, "cool", `{"code": "ACK", "msg": "cool message"}`},
	{false, "", `{"code": "COOL", "msg": "plain message"}`},
	{false, "cool", `{"text": "héllo wörld ✓ 日本語 🌍", "lines": "one\ntwo\r\nthree\rfour", "sep": "a` + "\u2028" + `b", "markup": "<b>&amp;</b>"}`},
	{false, "", "\"a plain string\\nwith a newline, ünïcode and 🌍\""},
	{true, "cool", "{\n  \"code\": \"ACK\",\n  \"msg\": \"from the CLI: ✓ 🌍\\nsecond line\"\n}\n"},
	{true, "", `{"code": "COOL", "msg": "plain from the CLI <&>"}`},
	{false, "cool", `[1, 2.5e3, null, true, {"nested": "\u00e9\"quoted\""}]`},
}

func TestPageReceivesEvents(t *testing.T) {
	srv := startServer(t, serverOptions{})
	ctx := newTab(t)
	logs := watchConsole(ctx)
	navigate(t, ctx, srv.URL+"/")
	waitStatus(t, ctx, "open")

	var cool, plain []string
	var plainIDs []string
	for _, e := range pageEvents {
		var id string
		if e.cli {
			id = publishCLI(t, srv.URL, "cool_channel", e.typ, e.data)
		} else {
			id = publish(t, srv.URL, "cool_channel", e.typ, e.data)
		}
		if e.typ == "cool" {
			cool = append(cool, e.data)
		} else {
			plain = append(plain, e.data)
			plainIDs = append(plainIDs, id)
		}
	}
	// An event on another channel must not reach the page.
	publish(t, srv.URL, "other_channel", "cool", `{"wrong":"channel"}`)

	items := waitItems(t, ctx, len(cool))
	for i, l := range plain {
		got := nextLog(t, logs)
		if len(got) != 3 || got[0] != "message" || got[1] != plainIDs[i] {
			t.Fatalf("console.log call %d: %q, want message, %s and the data", i, got, plainIDs[i])
		}
		checkData(t, got[2].(string), l)
	}
	// The last event went out after every other one on the stream, so by
	// now the page has seen them all.
	if st := readPage(t, ctx); len(st.Items) != len(cool) || st.Status != "open" {
		t.Fatalf("page shows %q with status %q, want %d items, open", st.Items, st.Status, len(cool))
	}
	for i, item := range items {
		if len(item) < len(coolPrefix) || item[:len(coolPrefix)] != coolPrefix {
			t.Fatalf("item %d = %q, want it to start with %q", i, item, coolPrefix)
		}
		checkData(t, item[len(coolPrefix):], cool[i])
	}
	select {
	case l, ok := <-logs:
		if ok {
			t.Errorf("unexpected console.log call %q", l)
		}
	default:
	}
}

func TestPageWithoutEventSource(t *testing.T) {
	srv := startServer(t, serverOptions{})
	ctx := newTab(t)
	hide := chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, page.AddScriptToEvaluateOnNewDocument,
			page.AddScriptToEvaluateOnNewDocumentParams{Source: "delete window.EventSource;"})
		return err
	})
	if err := chromedp.Do(ctx, hide, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.ID("notSupported"))); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, ctx, "unsupported")
	if n := len(srv.streamRequests()); n != 0 {
		t.Errorf("%d stream requests from a page without EventSource", n)
	}
}

// resumeSetup says where the hub processes of a resume test get their
// broker, and how events are published while no hub runs.
type resumeSetup struct {
	// newBroker opens the broker of one hub process, and returns the
	// function that closes it when that process stops.
	newBroker func(t *testing.T) (ssehub.Broker, func())
	// publishDown publishes data while no hub runs and returns its id.
	publishDown func(t *testing.T, data string) string
}

func TestResumeAfterRestart(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		// Each hub process has a Redis client of its own, and the events
		// published meanwhile go straight into Redis with ssehub publish.
		rs := redistest.Start(t)
		testResume(t, resumeSetup{
			newBroker: func(t *testing.T) (ssehub.Broker, func()) {
				b, closeBroker, err := openBroker(rs.URL(), slog.New(slog.DiscardHandler))
				if err != nil {
					t.Fatal(err)
				}
				return b, closeBroker
			},
			publishDown: func(t *testing.T, data string) string {
				return runPublishCLI(t, data, "--broker", rs.URL(), "--channel", "cool_channel", "--type", "cool")
			},
		}, 3)
	})
	sharedMemory := func(t *testing.T) resumeSetup {
		// MemoryBroker history lives in the process, so here one broker
		// outlives both hubs, as Redis would.
		b := ssehub.NewMemoryBroker(ssehub.MemoryConfig{})
		t.Cleanup(func() { b.Close(context.Background()) })
		return resumeSetup{
			newBroker: func(*testing.T) (ssehub.Broker, func()) { return b, func() {} },
			publishDown: func(t *testing.T, data string) string {
				e, err := b.Publish(t.Context(), ssehub.Message{Channel: "cool_channel", Type: "cool", Data: json.RawMessage(data)})
				if err != nil {
					t.Fatal(err)
				}
				return e.ID
			},
		}
	}
	t.Run("shared memory broker", func(t *testing.T) { testResume(t, sharedMemory(t), 3) })
	// A page that saw no event before the restart resumes from the id the
	// hub sent when the stream opened.
	t.Run("no event before the restart", func(t *testing.T) { testResume(t, sharedMemory(t), 0) })
}

// testResume publishes before events, stops the hub under an open page,
// publishes while it is down, and starts a new hub process on the same
// address: the page reconnects by itself with Last-Event-ID and shows
// every event once, in order.
func testResume(t *testing.T, setup resumeSetup, before int) {
	ctx := newTab(t)
	broker1, close1 := setup.newBroker(t)
	srv1 := startServer(t, serverOptions{broker: broker1, onStop: close1})
	addr := srv1.URL[len("http://"):]
	navigate(t, ctx, srv1.URL+"/")
	waitStatus(t, ctx, "open")

	var want, ids []string
	next := func() string {
		n := len(want) + 1
		data := fmt.Sprintf(`{"n":%d,"text":"événement %d"}`, n, n)
		want = append(want, coolPrefix+data)
		return data
	}
	for range before {
		ids = append(ids, publish(t, srv1.URL, "cool_channel", "cool", next()))
	}
	if before > 0 {
		waitItems(t, ctx, before)
	}

	srv1.stop(t)
	waitStatus(t, ctx, "reconnecting")
	for range 3 {
		ids = append(ids, setup.publishDown(t, next()))
	}

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening again on %s: %v", addr, err)
	}
	broker2, close2 := setup.newBroker(t)
	srv2 := startServer(t, serverOptions{ln: ln, broker: broker2, onStop: close2})
	waitItems(t, ctx, before+3)
	for range 3 {
		ids = append(ids, publish(t, srv2.URL, "cool_channel", "cool", next()))
	}
	waitItems(t, ctx, before+6)

	st := readPage(t, ctx)
	if st.Status != "open" {
		t.Errorf("status %q after the restart, want open", st.Status)
	}
	if fmt.Sprint(st.Items) != fmt.Sprint(want) {
		t.Errorf("page shows\n%q\nwant every event once, in order:\n%q", st.Items, want)
	}
	reqs := srv2.streamRequests()
	switch {
	case len(reqs) == 0:
		t.Errorf("no stream request after the restart")
	case before > 0 && reqs[0].lastEventID != ids[before-1]:
		t.Errorf("stream requests after the restart: %+v; want the first with Last-Event-ID %s", reqs, ids[before-1])
	case before == 0 && reqs[0].lastEventID == "":
		t.Errorf("stream requests after the restart: %+v; want the first with the position the hub sent on connect", reqs)
	}
}

func TestCrossOrigin(t *testing.T) {
	allowedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refusedLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	allowed := "http://" + allowedLn.Addr().String()
	refused := "http://" + refusedLn.Addr().String()
	hub := startServer(t, serverOptions{corsOrigins: []string{allowed}})
	startServer(t, serverOptions{ln: allowedLn, noHub: true, hubOrigin: hub.URL})
	startServer(t, serverOptions{ln: refusedLn, noHub: true, hubOrigin: hub.URL})

	t.Run("allowed", func(t *testing.T) {
		ctx := newTab(t)
		navigate(t, ctx, allowed+"/")
		waitStatus(t, ctx, "open")
		data := `{"from":"another origin ✓"}`
		publish(t, hub.URL, "cool_channel", "cool", data)
		items := waitItems(t, ctx, 1)
		if len(items) != 1 || items[0] != coolPrefix+data {
			t.Errorf("page shows %q", items)
		}
	})
	t.Run("refused", func(t *testing.T) {
		ctx := newTab(t)
		navigate(t, ctx, refused+"/")
		// The browser fails the connection for good: no CORS headers.
		waitStatus(t, ctx, "closed")
		state, err := chromedp.Run(ctx, chromedp.Evaluate[int](`document.querySelectorAll("#messages li").length`))
		if err != nil || state != 0 {
			t.Errorf("page of a refused origin shows %d items (%v)", state, err)
		}
	})

	var origins []string
	for _, r := range hub.streamRequests() {
		origins = append(origins, r.origin)
	}
	// The refused page did reach the hub: the browser refused the answer.
	if fmt.Sprint(origins) != fmt.Sprint([]string{allowed, refused}) {
		t.Errorf("stream requests came from %q, want %q then %q", origins, allowed, refused)
	}
}

// manyPage opens ten EventSource connections to its own origin and counts
// those that opened and those that received an event.
const manyPage = `<!DOCTYPE html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<script>
var sources = [], opened = [], received = [];
for (var i = 0; i < 10; i++) {
  (function(i) {
    var s = new EventSource("/sse?channel=many");
    s.onopen = function() { opened[i] = true; };
    s.addEventListener("cool", function() { received[i] = true; });
    sources.push(s);
  })(i);
}
function count(a) { return a.filter(Boolean).length; }
</script>`

func TestConnectionLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tls   bool
		proto int
		want  int
	}{
		// One HTTP/2 connection carries every stream.
		{"HTTP/2 over TLS", true, 2, 10},
		// Browsers open at most 6 HTTP/1.1 connections per host; the
		// other streams wait for one of them to close.
		{"HTTP/1.1", false, 1, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t, serverOptions{tls: tc.tls, extra: map[string]string{"/many": manyPage}})
			ctx := newTab(t)
			navigate(t, ctx, srv.URL+"/many")
			waitFor(t, ctx, fmt.Sprintf("count(opened) >= %d", tc.want))

			reqs := srv.streamRequests()
			if len(reqs) != tc.want {
				t.Fatalf("%d stream requests reached the server, want %d", len(reqs), tc.want)
			}
			for _, r := range reqs {
				if r.proto != tc.proto {
					t.Fatalf("a stream came over HTTP/%d, want HTTP/%d", r.proto, tc.proto)
				}
			}
			if _, err := srv.hub.Publish(t.Context(), ssehub.Message{Channel: "many", Type: "cool", Data: json.RawMessage(`{"all":true}`)}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, ctx, fmt.Sprintf("count(received) >= %d", tc.want))

			type counts struct{ Opened, Received, Waiting int }
			got, err := chromedp.Run(ctx, chromedp.Evaluate[counts](`({
				opened: count(opened),
				received: count(received),
				waiting: sources.filter(s => s.readyState === EventSource.CONNECTING).length,
			})`))
			if err != nil {
				t.Fatal(err)
			}
			want := counts{tc.want, tc.want, 10 - tc.want}
			if got != want || len(srv.streamRequests()) != tc.want {
				t.Errorf("page counts %+v with %d streams at the server, want %+v", got, len(srv.streamRequests()), want)
			}
		})
	}
}
