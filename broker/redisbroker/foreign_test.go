package redisbroker_test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// TestForeignIntoHistory: messages that invenio-sse and flask-sse PUBLISH
// straight onto a channel, two identical ones among them, reach the
// streams of two hubs once each, with the same ids on both, and enter the
// history once: a stream on either hub resumes from any of their ids
// without a reset, and Redis holds one entry per message.
func TestForeignIntoHistory(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	hubs := []*testHub{
		newHub(t, srv, redisbroker.Options{}, ssehub.Config{}),
		newHub(t, srv, redisbroker.Options{}, ssehub.Config{}),
	}
	var streams []*stream
	for _, h := range hubs {
		streams = append(streams, openStream(t, h.srv.URL, []string{"f"}, ""))
	}
	pub := newClient(t, srv)
	payloads := []string{
		`{"data": {"code": "COOL"}, "event": null, "id": 1795238353.220689, "retry": null}`,
		`{"data": "foo", "type": "example"}`,
		`{"data": "foo", "type": "example"}`,
		`{"data": ["line1\n"], "event": "cool", "id": "12345", "retry": "6000"}`,
	}
	own := hubs[0].publish(t, "f", 1)
	for _, p := range payloads {
		if err := pub.Publish(t.Context(), "f", p).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// A foreign message takes its place in the order when it is taken
	// in: this one comes after them all on both hubs.
	read := func(n int) []string {
		var ids []string
		for i, s := range streams {
			var got []string
			for range n {
				got = append(got, s.next().LastEventID)
			}
			if i > 0 && strings.Join(got, " ") != strings.Join(ids, " ") {
				t.Fatalf("hub B got ids %q, hub A %q", got, ids)
			}
			ids = got
		}
		return ids
	}
	ids := read(1 + len(payloads))
	last := hubs[1].publish(t, "f", 2)
	ids = append(ids, read(1)...)
	if ids[0] != own || ids[1] != "1795238353.220689" || ids[4] != "12345" || ids[len(ids)-1] != last || ids[2] == ids[3] {
		t.Fatalf("ids %q", ids)
	}
	if n, err := pub.XLen(t.Context(), "ssehub:stream:f").Result(); err != nil || n != int64(len(ids)) {
		t.Fatalf("the history holds %d entries, %v; want %d", n, err, len(ids))
	}
	for i, from := range ids[:len(ids)-1] {
		s := openStream(t, hubs[i%2].srv.URL, []string{"f"}, from)
		e := s.next()
		if e.Type == ssehub.ResetType || e.LastEventID != ids[i+1] {
			t.Fatalf("resumed from %s: %+v; want %s", from, e, ids[i+1])
		}
		if i == 1 && (e.Type != "example" || e.Data != "foo") {
			t.Fatalf("replayed flask-sse message %+v", e)
		}
		s.close()
	}
}

// TestFlaskEnvelope: with Envelope flask-sse, what a hub publishes reaches a
// reader on the same Redis that does what flask-sse's does,
// Message(**json.loads(message)) with a Message that takes data, type, id
// and retry only, and it reaches the streams of hubs of either shape once.
func TestFlaskEnvelope(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	flask := newHub(t, srv, redisbroker.Options{Envelope: redisbroker.EnvelopeFlaskSSE}, ssehub.Config{})
	invenio := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	streams := []*stream{
		openStream(t, flask.srv.URL, []string{"fl"}, ""),
		openStream(t, invenio.srv.URL, []string{"fl"}, ""),
	}
	reader := startFlaskReader(t, srv.URL(), "fl")
	msgs := []ssehub.Message{
		{Channel: "fl", Data: json.RawMessage(`{"message":"Hello!"}`), Type: "greeting"},
		{Channel: "fl", Data: json.RawMessage(`"plain"`), ID: "7", Retry: 500},
		{Channel: "fl", Data: json.RawMessage(`""`)},
		{Channel: "fl", Data: json.RawMessage(`[1,2]`)},
	}
	var ids []string
	for i, m := range msgs {
		h := flask
		if i == 3 {
			h = invenio // the other shape, between flask-sse ones
		}
		id, err := h.hub.Publish(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	for i, s := range streams {
		for j, m := range msgs {
			if e := s.next(); e.LastEventID != ids[j] || e.Data != string(m.Data) {
				t.Fatalf("hub %d event %d: %+v; want id %s data %s", i, j, e, ids[j], m.Data)
			}
		}
	}
	// flask-sse's reader renders what it got; the invenio-shaped one fails
	// it, as it always did.
	want := []string{
		"event:greeting\ndata:{\"message\": \"Hello!\"}\nid:" + ids[0] + "\n\n",
		"data:plain\nid:7\nretry:500\n\n",
		"id:" + ids[2] + "\n\n",
		"ERROR TypeError",
	}
	for i, w := range want {
		if got := reader.next(t); got != w {
			t.Fatalf("flask-sse reader, message %d: %q, want %q", i, got, w)
		}
	}
	// Both hubs delivered each event once: the next event on each stream is
	// the next one published.
	next, err := invenio.hub.Publish(t.Context(), ssehub.Message{Channel: "fl", Data: json.RawMessage(`"last"`)})
	if err != nil {
		t.Fatal(err)
	}
	for i, s := range streams {
		if e := s.next(); e.LastEventID != next {
			t.Fatalf("hub %d after the others: %+v; want %s", i, e, next)
		}
	}
}

// flaskReader is a Python process that reads a channel as flask-sse's
// messages() and stream() do, and prints each message's str(), JSON
// encoded, one a line.
type flaskReader struct {
	lines chan string
}

const flaskReaderProgram = `
import json, sys, redis

class Message(object):
    # flask-sse's Message: data, type, id and retry, nothing else.
    def __init__(self, data, type=None, id=None, retry=None):
        self.data, self.type, self.id, self.retry = data, type, id, retry

    def __str__(self):
        data = self.data if isinstance(self.data, str) else json.dumps(self.data, sort_keys=True)
        lines = ["data:{value}".format(value=line) for line in data.splitlines()]
        if self.type:
            lines.insert(0, "event:{value}".format(value=self.type))
        if self.id:
            lines.append("id:{value}".format(value=self.id))
        if self.retry:
            lines.append("retry:{value}".format(value=self.retry))
        return "\n".join(lines) + "\n\n"

ps = redis.Redis.from_url(sys.argv[1]).pubsub()
ps.subscribe(sys.argv[2])
for m in ps.listen():
    if m["type"] == "subscribe":
        print(json.dumps("READY"), flush=True)
    elif m["type"] == "message":
        try:
            out = str(Message(**json.loads(m["data"])))
        except TypeError:
            out = "ERROR TypeError"
        print(json.dumps(out), flush=True)
`

func startFlaskReader(t *testing.T, url, channel string) *flaskReader {
	t.Helper()
	runPython(t, "import redis") // skips or fails without Python and redis-py
	cmd := exec.CommandContext(t.Context(), "/usr/bin/python3", "-c", flaskReaderProgram, url, channel)
	root, _ := filepath.Abs("../../python")
	cmd.Env = append(os.Environ(), "PYTHONPATH="+root)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	r := &flaskReader{lines: make(chan string, 64)}
	go func() {
		defer close(r.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var s string
			if json.Unmarshal(sc.Bytes(), &s) == nil {
				r.lines <- s
			}
		}
	}()
	if got := r.next(t); got != "READY" {
		t.Fatalf("reader said %q", got)
	}
	return r
}

func (r *flaskReader) next(t *testing.T) string {
	t.Helper()
	select {
	case s, ok := <-r.lines:
		if !ok {
			t.Fatal("the reader ended")
		}
		return s
	case <-t.Context().Done():
	}
	return ""
}

// TestForeignNotTakenIn: when a foreign message cannot be taken into the
// history (here the channel's notice count is not a number, so the
// script refuses every hub), the hub delivers it as it is after a while,
// once, and takes the next one in when the count is sound again.
func TestForeignNotTakenIn(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	h := newHub(t, srv, redisbroker.Options{}, ssehub.Config{})
	s := openStream(t, h.srv.URL, []string{"t"}, "")
	own := h.publish(t, "t", 1) // once it arrives, the hub's subscription is in place
	s.expect(own)
	pub := newClient(t, srv)
	if err := pub.Set(t.Context(), "ssehub:notices:t", "broken", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pub.Publish(t.Context(), "t", `{"data": "stuck"}`)
	if e := s.next(); e.Data != "stuck" || e.IDSet {
		t.Fatalf("got %+v; want the message as it is, without an id", e)
	}
	if n := pub.XLen(t.Context(), "ssehub:stream:t").Val(); n != 1 {
		t.Fatalf("the history holds %d entries, want 1", n)
	}
	pub.Del(t.Context(), "ssehub:notices:t")
	pub.Publish(t.Context(), "t", `{"data": "taken"}`)
	e := s.next()
	if e.Data != "taken" || !e.IDSet {
		t.Fatalf("got %+v; want the message taken in, with an id", e)
	}
	r := openStream(t, h.srv.URL, []string{"t"}, own)
	if got := r.next(); got.Data != "taken" || got.LastEventID != e.LastEventID {
		t.Fatalf("resumed after the first: %+v; want only the one taken in", got)
	}
}
