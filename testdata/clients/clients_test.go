// Package clients runs third-party SSE clients against an ssehub hub, to
// check that none of them sees an event the hub did not publish: not for
// the retry line a stream starts with, not for heartbeat comments, and not
// for the position frame, which browsers get and others only when they
// ask. It is a module of its own so that the clients' modules stay out of
// ssehub's go.mod. docs/clients.md has the results.
package clients

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	r3 "github.com/r3labs/sse/v2"
	gosse "github.com/tmaxmax/go-sse"

	"github.com/ssehub/ssehub"
)

// waitTimeout bounds every wait; no assertion depends on timing.
const waitTimeout = 30 * time.Second

// received is an event as a client reported it.
type received struct {
	Type, Data, ID string
}

// testHub is a hub whose streams send a heartbeat every few milliseconds,
// with a count of the heartbeats written.
type testHub struct {
	hub   *ssehub.Hub
	srv   *httptest.Server
	beats atomic.Int64
}

// beatWriter counts the heartbeat comments a stream writes.
type beatWriter struct {
	http.ResponseWriter
	beats *atomic.Int64
}

func (w beatWriter) Write(p []byte) (int, error) {
	if len(p) > 0 && p[0] == ':' && len(bytes.Trim(p, ":\n")) == 0 {
		w.beats.Add(1)
	}
	return w.ResponseWriter.Write(p)
}

func (w beatWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func newHub(t *testing.T, retry time.Duration) *testHub {
	t.Helper()
	hub, err := ssehub.New(ssehub.Config{Heartbeat: 5 * time.Millisecond, Retry: retry})
	if err != nil {
		t.Fatal(err)
	}
	th := &testHub{hub: hub}
	th.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hub.ServeHTTP(beatWriter{w, &th.beats}, r)
	}))
	t.Cleanup(func() {
		th.srv.CloseClientConnections()
		hub.Close(context.Background())
		th.srv.Close()
	})
	return th
}

// waitBeats waits until n more heartbeats have been written.
func (th *testHub) waitBeats(t *testing.T, n int64) {
	t.Helper()
	want := th.beats.Load() + n
	deadline := time.Now().Add(waitTimeout)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for th.beats.Load() < want {
		if time.Now().After(deadline) {
			t.Fatalf("fewer than %d heartbeats after %v", n, waitTimeout)
		}
		<-tick.C
	}
}

func (th *testHub) publish(t *testing.T, m ssehub.Message) string {
	t.Helper()
	id, err := th.hub.Publish(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// scenario publishes three events on channel c to one client that is
// already connected, with heartbeats before, between and after them, and
// checks that the client reports exactly those three events.
func scenario(t *testing.T, th *testHub, got <-chan received) {
	t.Helper()
	th.waitBeats(t, 3) // connected, and idle for a while
	want := []received{
		{"message", `{"n":1}`, th.publish(t, ssehub.Message{Channel: "c", Data: json.RawMessage(`{"n":1}`)})},
	}
	th.waitBeats(t, 3) // heartbeats after an id was seen
	want = append(want, received{"cool", `"two"`, th.publish(t, ssehub.Message{Channel: "c", Type: "cool", ID: "12345", Data: json.RawMessage(`"two"`)})})
	th.waitBeats(t, 3)
	want = append(want, received{"message", "3", th.publish(t, ssehub.Message{Channel: "c", Data: json.RawMessage(`3`)})})
	for i, w := range want {
		select {
		case e := <-got:
			if e != w {
				t.Fatalf("event %d: the client reported %+v, want %+v", i+1, e, w)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("event %d: nothing after %v", i+1, waitTimeout)
		}
	}
}

func TestR3labs(t *testing.T) {
	t.Parallel()
	th := newHub(t, 0)
	c := r3.NewClient(th.srv.URL + "/sse?channel=c")
	events := make(chan *r3.Event, 64)
	if err := c.SubscribeChanRaw(events); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Unsubscribe(events) })
	got := make(chan received, 64)
	go func() {
		for e := range events {
			typ := string(e.Event)
			if typ == "" {
				typ = "message"
			}
			got <- received{typ, string(e.Data), string(e.ID)}
		}
	}()
	scenario(t, th, got)
}

func TestGoSSE(t *testing.T) {
	t.Parallel()
	th := newHub(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, th.srv.URL+"/sse?channel=c", nil)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan received, 64)
	conn := gosse.DefaultClient.NewConnection(req)
	conn.SubscribeToAll(func(e gosse.Event) {
		typ := e.Type
		if typ == "" {
			typ = "message"
		}
		got <- received{typ, e.Data, e.LastEventID}
	})
	go conn.Connect()
	scenario(t, th, got)
}

// node runs the npm eventsource client in node/ on url until it has
// reported count events, and passes on what it prints.
func node(t *testing.T, url string, count int) (events <-chan received, opens *atomic.Int64) {
	t.Helper()
	dir, _ := filepath.Abs("node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "eventsource")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("npm eventsource is not installed: run npm ci in %s", dir)
		}
		t.Skipf("npm eventsource is not installed: run npm ci in %s", dir)
	}
	cmd := exec.CommandContext(t.Context(), "node", "eventsource.mjs", url, strconv.Itoa(count), "cool")
	cmd.Dir = dir
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	ch := make(chan received, 64)
	opens = new(atomic.Int64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var line struct {
				Open       int64
				Type, Data string
				ID         string `json:"id"`
			}
			if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
				t.Errorf("node printed %q: %v; stderr %s", sc.Text(), err, stderr.String())
				return
			}
			if line.Open > 0 {
				opens.Store(line.Open)
				continue
			}
			ch <- received{line.Type, line.Data, line.ID}
		}
	}()
	return ch, opens
}

func TestNodeEventSource(t *testing.T) {
	t.Parallel()
	// The position frame makes no difference to it: it shows no event for
	// an id-only block (and, unlike browsers, does not take the id).
	for _, query := range []string{"", "&position=1"} {
		t.Run("query "+query, func(t *testing.T) {
			t.Parallel()
			th := newHub(t, 0)
			got, _ := node(t, th.srv.URL+"/sse?channel=c"+query, 3)
			scenario(t, th, got)
		})
	}
}
