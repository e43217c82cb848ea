package redisbroker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// TestRedisOutage stops Redis under a hub with an open stream: publishes
// fail with ErrUnavailable (503 over HTTP), Check fails, the stream stays
// open with heartbeats, a new stream is told when to come back; once Redis is back, delivery and resume work again
// without restarting the hub.
func TestRedisOutage(t *testing.T) {
	t.Parallel()
	srv := redistest.StartWith(t, redistest.Options{AppendOnly: true})
	h := newHub(t, srv, redisbroker.Options{}, ssehub.Config{Heartbeat: 20 * time.Millisecond})
	s := openStream(t, h.srv.URL, []string{"o"}, "")
	first := h.publish(t, "o", 1)
	s.expect(first)

	srv.Stop()
	_, err := h.hub.Publish(t.Context(), ssehub.Message{Channel: "o", Data: json.RawMessage(`2`)})
	if !errors.Is(err, ssehub.ErrUnavailable) {
		t.Fatalf("Publish with Redis down: %v, want ErrUnavailable", err)
	}
	resp, err := http.Post(h.srv.URL+"/publish", "application/json", strings.NewReader(`{"channel":"o","data":2}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !bytes.Contains(body, []byte(`"code":"unavailable"`)) {
		t.Fatalf("POST /publish with Redis down: %s %s", resp.Status, body)
	}
	if err := h.broker.Check(t.Context()); !errors.Is(err, ssehub.ErrUnavailable) {
		t.Fatalf("Check with Redis down: %v, want ErrUnavailable", err)
	}
	beats := s.heartbeats.Load()
	waitFor(t, "heartbeats on the open stream", func() bool { return s.heartbeats.Load() >= beats+3 })
	// A browser resuming now is told to come back later with an empty
	// stream, since an error status would stop its EventSource for good.
	resp = get(t, h.srv.URL, []string{"o"}, first)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.HasPrefix(body, []byte("retry: ")) || bytes.Contains(body, []byte("data:")) {
		t.Fatalf("resuming with Redis down: %s %q, want 200 with only a retry field", resp.Status, body)
	}

	srv.Start()
	waitReady(t, h.broker)
	second := h.publish(t, "o", 2)
	s.expect(second) // the stream opened before the outage, with no reset
	openStream(t, h.srv.URL, []string{"o"}, first).expect(second)
}

// TestRedisRestartLosesData: Redis comes back empty, so the events a hub
// may have missed are gone: its subscribers get a reset, then live events.
func TestRedisRestartLosesData(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	h := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	s := openStream(t, h.srv.URL, []string{"d"}, "")
	first := h.publish(t, "d", 1)
	s.expect(first)

	srv.Restart()
	reset := s.next()
	if reset.Type != ssehub.ResetType || reset.LastEventID == "" {
		t.Fatalf("after Redis lost its data the stream got %q id %q; want %q with an id", reset.Type, reset.LastEventID, ssehub.ResetType)
	}
	waitReady(t, h.broker)
	second := h.publish(t, "d", 2)
	s.expect(second)
	// The id from before is unknown now; the reset's id is not.
	r := openStream(t, h.srv.URL, []string{"d"}, first)
	if e := r.next(); e.Type != ssehub.ResetType {
		t.Fatalf("resume from before the restart: %q, want %q", e.Type, ssehub.ResetType)
	}
	r2 := openStream(t, h.srv.URL, []string{"d"}, reset.LastEventID)
	live := h.publish(t, "d", 3)
	s.expect(live)
	r2.expect(second, live)
}

// TestPubSubConnectionKilled kills the hub's pub/sub connection while its
// other connections live on. The broker subscribes again by itself, and
// events published meanwhile are delivered from the stream, in order.
func TestPubSubConnectionKilled(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	h := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	s := openStream(t, h.srv.URL, []string{"k", "l"}, "")
	s.expect(h.publish(t, "k", 1))

	admin := newClient(t, srv)
	publisher := newBroker(t, srv, redisbroker.Options{})
	for round := range 3 {
		if n, err := admin.ClientKillByFilter(t.Context(), "TYPE", "pubsub").Result(); err != nil || n == 0 {
			t.Fatalf("CLIENT KILL TYPE pubsub: %d, %v", n, err)
		}
		var missed []string
		for i := range 6 {
			missed = append(missed, pub(t, publisher, []string{"k", "l"}[i%2], "", 10*round+i).ID)
		}
		s.expect(missed...)
	}
}

// stallDialer dials Redis through connections it can stall: a stalled
// connection stays open but drops everything Redis sends, as a
// half-open TCP connection or a broken middlebox would.
type stallDialer struct {
	mu    sync.Mutex
	conns []*stallConn
}

type stallConn struct {
	net.Conn
	pubsub  atomic.Bool
	stalled atomic.Bool
}

func (d *stallDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	sc := &stallConn{Conn: c}
	d.mu.Lock()
	d.conns = append(d.conns, sc)
	d.mu.Unlock()
	return sc, nil
}

// stallPubSub stalls the pub/sub connections not stalled yet and returns
// how many.
func (d *stallDialer) stallPubSub() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := 0
	for _, c := range d.conns {
		if c.pubsub.Load() && !c.stalled.Load() {
			c.stalled.Store(true)
			n++
		}
	}
	return n
}

func (c *stallConn) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("subscribe")) {
		c.pubsub.Store(true)
	}
	return c.Conn.Write(p)
}

func (c *stallConn) Read(p []byte) (int, error) {
	for {
		n, err := c.Conn.Read(p)
		if err != nil || !c.stalled.Load() {
			return n, err
		}
	}
}

// TestWatchdogRebuildsStalledSubscription: the pub/sub connection stops
// delivering while Redis and the connection itself look fine. The canary
// does not come back, so the watchdog rebuilds the subscription, and the
// events published meanwhile arrive.
func TestWatchdogRebuildsStalledSubscription(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	d := &stallDialer{}
	opt := testOptions(srv)
	opt.Dialer = d.dial
	client := redis.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	b, err := redisbroker.New(client, redisbroker.Options{CanaryInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	hub, err := ssehub.New(ssehub.Config{Broker: b})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hub.Close(context.Background()) })
	waitReady(t, b)
	sub, err := hub.Subscribe(t.Context(), []string{"w"}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	next := func() string {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		defer cancel()
		e, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return e.ID
	}
	publish := func(n int) string {
		t.Helper()
		id, err := hub.Publish(t.Context(), ssehub.Message{Channel: "w", Data: json.RawMessage(`1`)})
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	if id, got := publish(1), next(); got != id {
		t.Fatalf("got %q, want %q", got, id)
	}
	for range 2 {
		if n := d.stallPubSub(); n != 1 {
			t.Fatalf("stalled %d pub/sub connections, want 1", n)
		}
		want := []string{publish(2), publish(3)}
		for _, id := range want {
			if got := next(); got != id {
				t.Fatalf("after the stall got %q, want %q", got, id)
			}
		}
	}
}
