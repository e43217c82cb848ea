package redisbroker_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/broker/redisbroker"
	"github.com/ssehub/ssehub/internal/redistest"
)

// TestForeignPublishers publishes with a raw PUBLISH what invenio-sse's and
// flask-sse's publish() put on Redis, and checks the exact bytes of the
// stream.
func TestForeignPublishers(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	th := newHub(t, srv, redisbroker.Options{}, ssehub.Config{Heartbeat: -1})
	const ch = "cool_channel"
	raw := openRaw(t, th.srv.URL, ch)
	if got := raw.read(2); got != ":\n" {
		t.Fatalf("stream opened with %q", got)
	}
	// No position frame: only browsers, and clients that ask, get one.
	pub := newClient(t, srv)
	for _, tt := range []struct{ name, payload, frame string }{
		{"invenio default", `{"data": {"code": "COOL", "msg": "cool message"}, "event": null, "id": 1795238353.220689, "retry": null}`,
			"id: 1795238353.220689\ndata: {\"code\": \"COOL\", \"msg\": \"cool message\"}\n\n"},
		{"invenio type, id and retry", `{"data": {"code": "ACK", "msg": "cool message"}, "event": "cool", "id": 12345, "retry": 6000}`,
			"id: 12345\nevent: cool\nretry: 6000\ndata: {\"code\": \"ACK\", \"msg\": \"cool message\"}\n\n"},
		{"invenio CLI", `{"data": ["line1\n", "line2\n"], "event": "cool", "id": "12345", "retry": "6000"}`,
			"id: 12345\nevent: cool\nretry: 6000\ndata: [\"line1\\n\", \"line2\\n\"]\n\n"},
		{"invenio string data", `{"data": "line1\nline2", "event": null, "id": 1795238353.2229617, "retry": null}`,
			"id: 1795238353.2229617\ndata: \"line1\\nline2\"\n\n"},
		{"flask all fields", `{"data": "foo", "id": 5, "retry": 500, "type": "example"}`,
			"id: 5\nevent: example\nretry: 500\ndata: foo\n\n"},
		{"flask data only", `{"data": {"b": 1, "a": 1}}`, "data: {\"a\": 1, \"b\": 1}\n\n"},
		{"flask multi-line string", `{"data": "one\ntwo"}`, "data: one\ndata: two\n\n"},
	} {
		n, err := pub.Publish(t.Context(), ch, tt.payload).Result()
		if err != nil || n != 1 {
			t.Fatalf("%s: PUBLISH reached %d subscribers, %v; want the hub's one", tt.name, n, err)
		}
		want := tt.frame
		if !strings.HasPrefix(want, "id: ") {
			// Taken into the history, it has the id the hub gave it.
			id := raw.read(len("id: 0000000000000000\n"))
			if !regexp.MustCompile(`^id: \d{16}\n$`).MatchString(id) {
				t.Fatalf("%s: stream has %q, want an id the hub gave", tt.name, id)
			}
		}
		if got := raw.read(len(want)); got != want {
			t.Fatalf("%s: stream has\n%q, want\n%q", tt.name, got, want)
		}
	}
	// A malformed message is dropped; the next one still arrives.
	pub.Publish(t.Context(), ch, `{"data": 1, "event": "a\nb", "id": null, "retry": null}`)
	pub.Publish(t.Context(), ch, `not json`)
	pub.Publish(t.Context(), ch, `{"data": 2, "id": 2}`)
	if got, want := raw.read(len("id: 2\ndata: 2\n\n")), "id: 2\ndata: 2\n\n"; got != want {
		t.Fatalf("after malformed messages the stream has %q, want %q", got, want)
	}
}

// TestEnvelopeForInvenio reads what the broker publishes with a plain Redis
// subscriber, as invenio-sse's messages() does: a JSON object with data,
// event, id and retry.
func TestEnvelopeForInvenio(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	b := newBroker(t, srv, redisbroker.Options{})
	ps := newClient(t, srv).Subscribe(t.Context(), "sse")
	defer ps.Close()
	if _, err := ps.Receive(t.Context()); err != nil { // the subscription's confirmation
		t.Fatal(err)
	}
	msgs := []ssehub.Message{
		{Data: json.RawMessage(`{"code": "COOL", "msg": "cool message"}`)},
		{Data: json.RawMessage(`"text"`), Type: "cool", ID: "12345", Retry: 6000},
	}
	for _, m := range msgs {
		if err := m.Normalize(); err != nil {
			t.Fatal(err)
		}
		e, err := b.Publish(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ps.ReceiveMessage(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		var env map[string]json.RawMessage
		if err := json.Unmarshal([]byte(got.Payload), &env); err != nil {
			t.Fatalf("payload %s: %v", got.Payload, err)
		}
		want := map[string]string{
			"data":       string(m.Data),
			"event":      jsonOrNull(m.Type != "", strconv.Quote(m.Type)),
			"id":         strconv.Quote(e.ID),
			"retry":      jsonOrNull(m.Retry != 0, strconv.Itoa(m.Retry)),
			"ssehub_seq": strconv.FormatUint(e.Seq, 10),
		}
		for k, v := range want {
			if !bytes.Equal(env[k], []byte(v)) {
				t.Errorf("payload %s: %s is %s, want %s", got.Payload, k, env[k], v)
			}
		}
		if len(env) != len(want) {
			t.Errorf("payload %s has %d keys, want %d", got.Payload, len(env), len(want))
		}
	}
}

func jsonOrNull(set bool, v string) string {
	if set {
		return v
	}
	return "null"
}

// TestIDs: ids the broker assigns are its sequence numbers in 16 digits,
// as the memory broker writes them, and sort in publish order across
// channels, also between two brokers on one Redis.
func TestIDs(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	brokers := []*redisbroker.Broker{newBroker(t, srv, redisbroker.Options{}), newBroker(t, srv, redisbroker.Options{})}
	mem := ssehub.NewMemoryBroker(ssehub.MemoryConfig{})
	var last string
	for i := range 20 {
		m := ssehub.Message{Channel: "c" + strconv.Itoa(i%3), Data: json.RawMessage(`1`)}
		e, err := brokers[i%2].Publish(t.Context(), m)
		if err != nil {
			t.Fatal(err)
		}
		if len(e.ID) != 16 || e.ID != redisbroker.FormatSeq(e.Seq) {
			t.Fatalf("id %q for seq %d", e.ID, e.Seq)
		}
		if e.ID <= last {
			t.Fatalf("id %q after %q", e.ID, last)
		}
		last = e.ID
		me, _ := mem.Publish(t.Context(), m)
		if len(me.ID) != len(e.ID) || me.ID != redisbroker.FormatSeq(me.Seq) {
			t.Fatalf("memory broker id %q (seq %d) and Redis broker id %q differ in form", me.ID, me.Seq, e.ID)
		}
	}
}
