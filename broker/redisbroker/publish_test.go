package redisbroker_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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

// errLost stands for an answer that never came back: a read timeout.
var errLost = errors.New("read tcp 127.0.0.1:1->127.0.0.1:2: i/o timeout")

// hookedBroker returns a broker whose client runs process around every
// command.
func hookedBroker(t *testing.T, srv *redistest.Server, opts redisbroker.Options, process func(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error) *redisbroker.Broker {
	t.Helper()
	client := newClient(t, srv)
	client.AddHook(hook{process: process})
	b, err := redisbroker.New(client, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	return b
}

// TestPublishAnswerLost: Redis runs the publish script but its answer is
// lost. The broker asks Redis, learns that the event was published, and
// returns it: one event, stored and delivered once.
func TestPublishAnswerLost(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	var lose atomic.Bool
	b := hookedBroker(t, srv, redisbroker.Options{Prefix: "al:"}, func(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error {
		err := next(ctx, cmd)
		if scriptKeys(cmd) == 9 && lose.CompareAndSwap(true, false) {
			cmd.SetErr(errLost)
			return errLost
		}
		return err
	})
	r := newLive(t, srv, "lost")
	before := pub(t, b, "lost", "", 0) // loads the script, so that the lost EVALSHA runs it
	lose.Store(true)
	e, err := b.Publish(t.Context(), ssehub.Message{Channel: "lost", Data: json.RawMessage(`1`)})
	if err != nil || lose.Load() {
		t.Fatalf("publish whose answer is lost: %v (the answer was lost: %v)", err, !lose.Load())
	}
	last := pub(t, b, "lost", "", 2)
	r.expect(t, before.ID, e.ID, last.ID)
	if n := newClient(t, srv).XLen(t.Context(), "al:stream:lost").Val(); n != 3 {
		t.Fatalf("the stream holds %d events, want 3", n)
	}
}

// TestPublishLateAttempt: the publish script does not reach Redis in time
// (it is still on its way when the broker gives up). The broker closes the
// key to that attempt and answers ErrUnavailable; when the attempt reaches
// Redis later, it publishes nothing.
func TestPublishLateAttempt(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	other := newClient(t, srv)
	var (
		delay   atomic.Bool
		fenced  = make(chan struct{})
		late    = make(chan []any, 1)
		fenceMu sync.Once
	)
	b := hookedBroker(t, srv, redisbroker.Options{Prefix: "la:"}, func(ctx context.Context, cmd redis.Cmder, next redis.ProcessHook) error {
		switch scriptKeys(cmd) {
		case 9:
			if delay.CompareAndSwap(true, false) {
				args := cmd.Args()
				go func() {
					<-fenced
					v, err := other.Do(context.Background(), args...).Slice()
					if err != nil {
						v = []any{err}
					}
					late <- v
				}()
				cmd.SetErr(errLost)
				return errLost
			}
		case 2:
			err := next(ctx, cmd)
			fenceMu.Do(func() { close(fenced) })
			return err
		}
		return next(ctx, cmd)
	})
	r := newLive(t, srv, "late")
	pub(t, b, "late", "", 0) // loads the script, so that the late EVALSHA finds it
	delay.Store(true)
	m := ssehub.Message{Channel: "late", Data: json.RawMessage(`1`), IdempotencyKey: "late-1"}
	if _, err := b.Publish(t.Context(), m); !errors.Is(err, ssehub.ErrUnavailable) {
		t.Fatalf("publish that did not reach Redis: %v, want ErrUnavailable", err)
	}
	if v := <-late; fmt.Sprint(v) != "[0 0 2]" {
		t.Fatalf("the late attempt got %v, want [0 0 2]: given up on, nothing published", v)
	}
	// Sent again, the message is published, once.
	again, err := b.Publish(t.Context(), m)
	if err != nil {
		t.Fatal(err)
	}
	if e, err := b.Publish(t.Context(), m); err != nil || e.ID != again.ID {
		t.Fatalf("publish a third time: %v, %v; want id %s", e, err, again.ID)
	}
	r.expect(t, "", again.ID)
}

// live reads the events Redis publishes on a channel, with a plain
// subscriber.
type live struct{ ps *redis.PubSub }

func newLive(t *testing.T, srv *redistest.Server, channel string) *live {
	t.Helper()
	ps := newClient(t, srv).Subscribe(t.Context(), channel)
	t.Cleanup(func() { ps.Close() })
	if _, err := ps.Receive(t.Context()); err != nil {
		t.Fatal(err)
	}
	return &live{ps: ps}
}

// expect checks the ids of the next events; an empty id is skipped.
func (l *live) expect(t *testing.T, ids ...string) {
	t.Helper()
	for _, want := range ids {
		ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
		msg, err := l.ps.ReceiveMessage(ctx)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		var env struct{ ID string }
		json.Unmarshal([]byte(msg.Payload), &env)
		if want == "" {
			continue
		}
		if env.ID != want {
			t.Fatalf("delivered %s, want id %s", msg.Payload, want)
		}
	}
}

// TestFrozenRedis freezes Redis (SIGSTOP) for 10 s under a hub that
// publishes over HTTP and another whose stream receives. While frozen,
// /readyz answers 503 within its 2 s and publishes answer by the publish
// timeout. Once thawed, every message answered 200 has been delivered
// once, none answered 503 has been delivered, and the 504s, sent again
// with their keys, end up delivered once each.
func TestFrozenRedis(t *testing.T) {
	t.Parallel()
	const freeze = 10 * time.Second
	srv := redistest.Start(t)
	// The publishing hub's client has few connections and waits little
	// for one, so that some publishes find none while Redis is frozen:
	// those were never sent and must answer 503.
	ro := testOptions(srv)
	ro.PoolSize, ro.PoolTimeout = 4, 300*time.Millisecond
	client := redis.NewClient(ro)
	t.Cleanup(func() { client.Close() })
	pubBroker, err := redisbroker.New(client, redisbroker.Options{CanaryInterval: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pubBroker.Close(context.Background()) })
	pubHub := newHubOn(t, pubBroker, ssehub.Config{PublishTimeout: 2 * time.Second})
	subHub := newHub(t, srv, redisbroker.Options{CanaryInterval: 500 * time.Millisecond}, ssehub.Config{})
	s := openStream(t, subHub.srv.URL, []string{"f"}, "")

	type outcome struct {
		status int
		id     string
	}
	var (
		mu      sync.Mutex
		results = map[int]outcome{} // by message number
		stop    atomic.Bool
		wg      sync.WaitGroup
		next    atomic.Int64
	)
	post := func(n int) outcome {
		req, _ := http.NewRequest(http.MethodPost, pubHub.srv.URL+"/publish", strings.NewReader(fmt.Sprintf(`{"channel":"f","data":{"n":%d}}`, n)))
		req.Header.Set("Idempotency-Key", "msg-"+strconv.Itoa(n))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Errorf("POST /publish: %v", err)
			return outcome{}
		}
		defer resp.Body.Close()
		var body struct{ ID, Code string }
		json.NewDecoder(resp.Body).Decode(&body)
		return outcome{resp.StatusCode, body.ID}
	}
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				n := int(next.Add(1))
				o := post(n)
				mu.Lock()
				results[n] = o
				mu.Unlock()
			}
		})
	}
	count := func(status int) int {
		mu.Lock()
		defer mu.Unlock()
		k := 0
		for _, o := range results {
			if o.status == status {
				k++
			}
		}
		return k
	}
	waitFor(t, "publishes before the freeze", func() bool { return count(http.StatusOK) >= 50 })

	srv.Freeze()
	thaw := time.After(freeze)
	probes := 0
	for frozen := true; frozen; {
		select {
		case <-thaw:
			frozen = false
			continue
		default:
		}
		// /readyz answers within its 2 s limit, or this request fails.
		ctx, cancel := context.WithTimeout(t.Context(), 2500*time.Millisecond)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, pubHub.srv.URL+"/readyz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			cancel()
			t.Fatalf("/readyz with Redis frozen: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("/readyz with Redis frozen: %s", resp.Status)
		}
		probes++
	}
	srv.Thaw()
	before := count(http.StatusOK)
	waitFor(t, "publishes after the freeze", func() bool { return count(http.StatusOK) >= before+50 })
	stop.Store(true)
	wg.Wait()

	// Send the 504s again with their keys, until each has a definite answer.
	mu.Lock()
	var unknown []int
	for n, o := range results {
		if o.status == http.StatusGatewayTimeout {
			unknown = append(unknown, n)
		}
	}
	mu.Unlock()
	if len(unknown) == 0 {
		t.Errorf("no publish answered 504 while Redis was frozen")
	}
	for _, n := range unknown {
		var o outcome
		waitFor(t, "a definite answer to a publish sent again", func() bool {
			o = post(n)
			return o.status == http.StatusOK
		})
		results[n] = o
	}
	marker := pubHub.publish(t, "f", -1)

	delivered := map[int]int{}
	ids := map[int]string{}
	for {
		e := s.next()
		if e.LastEventID == marker {
			break
		}
		var d struct{ N int }
		if err := json.Unmarshal([]byte(e.Data), &d); err != nil || e.Type != "message" {
			t.Fatalf("unexpected event %+v", e)
		}
		delivered[d.N]++
		ids[d.N] = e.LastEventID
	}
	for n, k := range delivered {
		if k != 1 {
			t.Errorf("message %d delivered %d times", n, k)
		}
	}
	statuses := map[int]int{}
	for n, o := range results {
		statuses[o.status]++
		switch o.status {
		case http.StatusOK:
			if delivered[n] != 1 || ids[n] != o.id {
				t.Errorf("message %d answered 200 with id %s, delivered %d times with id %s", n, o.id, delivered[n], ids[n])
			}
		case http.StatusServiceUnavailable:
			if delivered[n] != 0 {
				t.Errorf("message %d answered 503 and was delivered", n)
			}
		default:
			t.Errorf("message %d answered %d", n, o.status)
		}
	}
	t.Logf("%d publishes (statuses %v, %d answered 504 and sent again), %d readiness probes while frozen", len(results), statuses, len(unknown), probes)
}
