package redisbroker

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

func TestDecodeEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		frame   string // "" when the message must be dropped
		seq     uint64
	}{
		// invenio-sse publish(): all four keys, nulls kept, id a float by
		// default; data as Python's json.dumps writes it.
		{"invenio default id", `{"data": {"code": "COOL", "msg": "cool message"}, "event": null, "id": 1795238353.220689, "retry": null}`,
			"id: 1795238353.220689\ndata: {\"code\": \"COOL\", \"msg\": \"cool message\"}\n\n", 0},
		{"invenio all fields", `{"data": {"code":"ACK"}, "event": "cool", "id": 12345, "retry": 6000}`,
			"id: 12345\nevent: cool\nretry: 6000\ndata: {\"code\": \"ACK\"}\n\n", 0},
		{"invenio CLI strings and lines", `{"data": ["{\"code\": \"ACK\"}\n"], "event": "cool", "id": "12345", "retry": "6000"}`,
			"id: 12345\nevent: cool\nretry: 6000\ndata: [\"{\\\"code\\\": \\\"ACK\\\"}\\n\"]\n\n", 0},
		{"invenio string data keeps quotes", `{"data": "line1\nline2", "event": null, "id": 1795238353.2229617, "retry": null}`,
			"id: 1795238353.2229617\ndata: \"line1\\nline2\"\n\n", 0},
		{"invenio long float id", `{"data": 1, "event": null, "id": 1795238353.22296171234567, "retry": null}`,
			"id: 1795238353.2229617\ndata: 1\n\n", 0},
		{"invenio float forms", `{"data": [1E2, 1e16, 0.00001, -0.0, 1e400, NaN, 12345678901234567890], "event": null, "id": null, "retry": null}`,
			"data: [100.0, 1e+16, 1e-05, -0.0, Infinity, NaN, 12345678901234567890]\n\n", 0},
		{"invenio non-ASCII escaped", `{"data": {"k": "é\u2028😀\ud800<"}, "event": null, "id": null, "retry": null}`,
			"data: {\"k\": \"\\u00e9\\u2028\\ud83d\\ude00\\ud800<\"}\n\n", 0},
		{"invenio repeated key", `{"data": {"a": 1, "b": 2, "a": 3}, "event": null, "id": null, "retry": null}`,
			"data: {\"a\": 3, \"b\": 2}\n\n", 0},
		{"invenio null data", `{"data": null, "event": null, "id": null, "retry": null}`, "data: null\n\n", 0},
		{"invenio falsy fields", `{"data": 1, "event": "", "id": 0, "retry": 0.0}`, "data: 1\n\n", 0},
		{"invenio true id, bad retries", `{"data": 1, "event": null, "id": true, "retry": 2.5}`, "id: True\ndata: 1\n\n", 0},
		{"invenio leading spaces eaten", `{"data": 1, "event": " t", "id": " 5", "retry": " 600"}`, "id: 5\nevent: t\nretry: 600\ndata: 1\n\n", 0},
		{"invenio repr fields", `{"data": 1, "event": ["a", "b'"], "id": {"k": null}, "retry": null}`,
			"id: {'k': None}\nevent: ['a', \"b'\"]\ndata: 1\n\n", 0},
		{"invenio NUL in id", `{"data": 1, "event": null, "id": "a\u0000b", "retry": null}`, "data: 1\n\n", 0},
		// flask-sse sse.publish(): falsy keys left out, "type" for the event.
		{"flask string data raw", `{"data": "foo", "id": 5, "retry": 500, "type": "example"}`,
			"id: 5\nevent: example\nretry: 500\ndata: foo\n\n", 0},
		{"flask object data sorted", `{"data": {"b": 1, "a": [2.0]}}`, "data: {\"a\": [2.0], \"b\": 1}\n\n", 0},
		{"flask multi-line string", `{"data": "a\nb\r\nc"}`, "data: a\ndata: b\ndata: c\n\n", 0},
		{"flask splitlines", `{"data": "a\u2028b\u000bc\u0085d\n"}`, "data: a\ndata: b\ndata: c\ndata: d\n\n", 0},
		{"flask leading space", `{"data": "  x\n y"}`, "data:  x\ndata: y\n\n", 0},
		{"flask newline only", `{"data": "\n"}`, "data:\n\n", 0},
		{"flask string retry", `{"data": "x", "retry": "6000"}`, "retry: 6000\ndata: x\n\n", 0},
		// ssehub's own.
		{"own", `{"data":{"n":1},"event":"t","retry":null,"id":"1795238353220689","ssehub_seq":1795238353220689}`,
			"id: 1795238353220689\nevent: t\ndata: {\"n\":1}\n\n", 1795238353220689},
		{"own string data keeps quotes", `{"data":"x","event":null,"retry":2000,"id":"own","ssehub_seq":7}`,
			"id: own\nretry: 2000\ndata: \"x\"\n\n", 7},
		{"flask data that names the mark", `{"data": "\"ssehub_seq\": 1", "id": "m"}`, "id: m\ndata: \"ssehub_seq\": 1\n\n", 0},
		{"invenio NaN data that names the mark", `{"data": [NaN, "ssehub_seq"], "event": null, "id": "m", "retry": null}`,
			"id: m\ndata: [NaN, \"ssehub_seq\"]\n\n", 0},
		// Dropped.
		{"flask empty string", `{"data": ""}`, "", 0},
		{"not JSON", `hello`, "", 0},
		{"not an object", `[1]`, "", 0},
		{"no data", `{"event": "e", "id": 1, "retry": null}`, "", 0},
		{"raw control character", "{\"data\": \"a\tb\"}", "", 0},
		{"line break in id", `{"data": 1, "event": null, "id": "a\nb", "retry": null}`, "", 0},
		{"CR in type", `{"data": 1, "type": "a\rb"}`, "", 0},
		{"line break in retry", `{"data": 1, "type": "t", "retry": "1\n2"}`, "", 0},
		{"reserved type", `{"data": 1, "event": "ssehub.reset", "id": null, "retry": null}`, "", 0},
		{"lone surrogate in id", `{"data": 1, "event": null, "id": "\udc00", "retry": null}`, "", 0},
		{"lone surrogate in flask string", `{"data": "\udc00"}`, "", 0},
		{"bad seq", `{"data": 1, "event": null, "id": "x", "ssehub_seq": "x"}`, "", 0},
		{"leading zero", `{"data": 01}`, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e, err := decodeEnvelope("ch", []byte(tt.payload))
			if tt.frame == "" {
				if err == nil {
					t.Fatalf("decoded %q; want an error", e.Frame())
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := string(e.Frame()); got != tt.frame {
				t.Fatalf("frame\n%q, want\n%q", got, tt.frame)
			}
			if e.Seq != tt.seq || e.Channel != "ch" {
				t.Fatalf("seq %d channel %q; want %d \"ch\"", e.Seq, e.Channel, tt.seq)
			}
		})
	}
}

// legacyCase is one publish captured from the real invenio-sse and
// flask-sse by scripts/capture-legacy.py: what the library put on Redis and
// the bytes its view streamed for it.
type legacyCase struct {
	Lib     string `json:"lib"`
	Call    string `json:"call"`
	Payload string `json:"payload"`
	Frame   string `json:"frame"`
}

func loadLegacy(t *testing.T) []legacyCase {
	t.Helper()
	b, err := os.ReadFile("testdata/legacy.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []legacyCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 30 {
		t.Fatalf("testdata/legacy.json has %d cases", len(cases))
	}
	return cases
}

// browserView is what an EventSource makes of a stream: the events it
// dispatches, and its last event id and reconnection time at the end.
type browserView struct {
	Events []sse.Event
	LastID string
	Retry  int
}

func parseStream(t *testing.T, stream string) browserView {
	t.Helper()
	d := sse.NewDecoder(strings.NewReader(stream))
	var v browserView
	for {
		e, err := d.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%q: %v", stream, err)
		}
		v.Events = append(v.Events, e)
	}
	v.LastID, v.Retry = d.LastEventID(), d.Retry()
	return v
}

// TestLegacyViews: for every captured publish of invenio-sse and flask-sse,
// a browser reading ssehub's stream sees what it sees reading the
// library's own view: the same events with the same type, data, last
// event id and reconnection time.
func TestLegacyViews(t *testing.T) {
	t.Parallel()
	// The one effect ssehub leaves out: flask-sse sets the last event id
	// with an event that has no data line (see decodeLegacy).
	idOnly := map[string]bool{"publish('', type='t', id='7')": true}
	for _, c := range loadLegacy(t) {
		t.Run(c.Lib+" "+c.Call, func(t *testing.T) {
			t.Parallel()
			want := parseStream(t, c.Frame)
			var frame string
			e, err := decodeEnvelope("ch", []byte(c.Payload))
			switch {
			case errors.Is(err, errNoEvent):
			case err != nil:
				t.Fatalf("%s: %v", c.Payload, err)
			default:
				frame = string(e.Frame())
			}
			got := parseStream(t, frame)
			if idOnly[c.Call] {
				if len(want.Events) != 0 || len(got.Events) != 0 || want.LastID == "" || got.LastID != "" {
					t.Fatalf("library %+v, ssehub %+v: want an id-only frame and nothing", want, got)
				}
				return
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("payload %s\nlibrary frame %q reads as %+v\nssehub frame  %q reads as %+v", c.Payload, c.Frame, want, frame, got)
			}
		})
	}
}

// TestEnvelopeRoundTrip: the head Publish builds, completed as the publish
// script completes it, decodes to the event Publish returns, and reads as
// invenio-sse's envelope.
func TestEnvelopeRoundTrip(t *testing.T) {
	t.Parallel()
	for _, m := range []ssehub.Message{
		{Channel: "c", Data: json.RawMessage(`{"a":"<b>&"}`), Type: "t\u00e9", Retry: 1500, ID: "x\"y"},
		{Channel: "c", Data: json.RawMessage(`"s"`)},
	} {
		const seq = 1795238353220689
		id := m.ID
		if id == "" {
			id = FormatSeq(seq)
		}
		payload := string(appendEnvelopeHead(nil, m)) + string(appendJSONString(nil, id)) + `,"ssehub_seq":1795238353220689}`
		got, err := decodeEnvelope(m.Channel, []byte(payload))
		if err != nil {
			t.Fatalf("%s: %v", payload, err)
		}
		want := ssehub.NewEvent(m.Channel, id, m.Type, m.Data, m.Retry, seq, got.Time)
		if string(got.Frame()) != string(want.Frame()) || got.Seq != seq {
			t.Fatalf("%s decoded to %q seq %d; want %q", payload, got.Frame(), got.Seq, want.Frame())
		}
		var inv map[string]any
		if err := json.Unmarshal([]byte(payload), &inv); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"data", "event", "id", "retry"} {
			if _, ok := inv[k]; !ok {
				t.Fatalf("%s lacks %q", payload, k)
			}
		}
	}
}

// FuzzDecodeOwnFast checks that the fast path reads an envelope only when
// decodeOwn reads it to the same event, and that it reads the envelopes
// the broker writes.
func FuzzDecodeOwnFast(f *testing.F) {
	for _, p := range []string{
		`{"data":{"a":1},"event":null,"retry":null,"id":"0001795238353220689","ssehub_seq":1795238353220689}`,
		`{"data":"s","event":"t\u00e9","retry":1500,"id":"x","ssehub_seq":17}`,
		`{"data":[1, 2],"event":"t","retry":7,"id":"é","ssehub_seq":17}`,
		`{"data":1,"event":2,"event":null,"retry":null,"id":"x","ssehub_seq":17}`,
		`{"data":"a\",\"event\":\"b","event":null,"retry":null,"id":"x","ssehub_seq":17}`,
		`{"data":1,"event":"a\"b","retry":null,"id":"x","ssehub_seq":17}`,
		`{"data":1,"event":null,"retry":007,"id":"x","ssehub_seq":17}`,
		`{"data":1,"event":null,"retry":null,"id":"x","ssehub_seq":0}`,
		`{"data":1,"event":null,"retry":null,"id":"","ssehub_seq":17}`,
		`{"data":1,"event":"ssehub.x","retry":null,"id":"x","ssehub_seq":17}`,
		`{"data":1,"event":null,"retry":null,"id":"a` + "\xff" + `","ssehub_seq":17}`,
		`{"foreign":"{}","id":"x","ssehub_seq":17}`,
	} {
		f.Add([]byte(p))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		got, ok := decodeOwnFast("c", payload)
		if !ok {
			return
		}
		want, err := decodeOwn("c", payload)
		if err != nil {
			t.Fatalf("%s: the fast path read it, decodeOwn says %v", payload, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: fast path %+v, decodeOwn %+v", payload, got, want)
		}
	})
}

// TestDecodeOwnFastTakesOwn: the envelopes Publish writes, with and without
// type, retry and a publisher's id, go through the fast path.
func TestDecodeOwnFastTakesOwn(t *testing.T) {
	t.Parallel()
	for _, m := range []ssehub.Message{
		{Channel: "c", Data: json.RawMessage(`{"a":"<b>&"}`), Type: "t\u00e9", Retry: 1500, ID: "x y"},
		{Channel: "c", Data: json.RawMessage(`"s"`)},
	} {
		id := m.ID
		if id == "" {
			id = FormatSeq(17)
		}
		payload := string(appendEnvelopeHead(nil, m)) + string(appendJSONString(nil, id)) + `,"ssehub_seq":17}`
		if _, ok := decodeOwnFast("c", []byte(payload)); !ok {
			t.Errorf("%s: not read by the fast path", payload)
		}
	}
}
