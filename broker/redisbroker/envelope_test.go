package redisbroker

import (
	"encoding/json"
	"testing"

	"github.com/ssehub/ssehub"
)

func TestDecodeEnvelope(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		payload string
		frame   string // "" when the message must be dropped
		seq     uint64
	}{
		// invenio-sse publish(): all four keys, nulls kept, id a float by default.
		{"invenio default id", `{"data": {"code": "COOL", "msg": "cool message"}, "event": null, "id": 1795238353.220689, "retry": null}`,
			"id: 1795238353.220689\ndata: {\"code\":\"COOL\",\"msg\":\"cool message\"}\n\n", 0},
		{"invenio all fields", `{"data": {"code": "ACK", "msg": "cool message"}, "event": "cool", "id": 12345, "retry": 6000}`,
			"id: 12345\nevent: cool\nretry: 6000\ndata: {\"code\":\"ACK\",\"msg\":\"cool message\"}\n\n", 0},
		{"invenio string data keeps quotes", `{"data": "line1\nline2", "event": null, "id": 1795238353.2229617, "retry": null}`,
			"id: 1795238353.2229617\ndata: \"line1\\nline2\"\n\n", 0},
		{"invenio long float id", `{"data": 1, "event": null, "id": 1795238353.22296171234567, "retry": null}`,
			"id: 1795238353.22296171234567\ndata: 1\n\n", 0},
		{"invenio null data", `{"data": null, "event": null, "id": null, "retry": null}`, "data: null\n\n", 0},
		{"invenio falsy id and retry", `{"data": 1, "event": "", "id": 0, "retry": 0}`, "data: 1\n\n", 0},
		{"invenio string id", `{"data": [1, 2], "event": "e", "id": "a-1", "retry": null}`, "id: a-1\nevent: e\ndata: [1,2]\n\n", 0},
		// flask-sse sse.publish(): falsy keys left out, "type" for the event.
		{"flask string data raw", `{"data": "foo", "id": 5, "retry": 500, "type": "example"}`,
			"id: 5\nevent: example\nretry: 500\ndata: foo\n\n", 0},
		{"flask object data", `{"data": {"a": 1}}`, "data: {\"a\":1}\n\n", 0},
		{"flask multi-line string", `{"data": "a\nb\r\nc"}`, "data: a\ndata: b\ndata: c\n\n", 0},
		// ssehub's own.
		{"own", `{"data":{"n":1},"event":"t","retry":null,"id":"1795238353220689","ssehub_seq":1795238353220689}`,
			"id: 1795238353220689\nevent: t\ndata: {\"n\":1}\n\n", 1795238353220689},
		{"own string data keeps quotes", `{"data":"x","event":null,"retry":2000,"id":"own","ssehub_seq":7}`,
			"id: own\nretry: 2000\ndata: \"x\"\n\n", 7},
		// Dropped.
		{"not JSON", `hello`, "", 0},
		{"not an object", `[1]`, "", 0},
		{"no data", `{"event": "e", "id": 1, "retry": null}`, "", 0},
		{"line break in id", `{"data": 1, "event": null, "id": "a\nb", "retry": null}`, "", 0},
		{"CR in type", `{"data": 1, "type": "a\rb"}`, "", 0},
		{"reserved type", `{"data": 1, "event": "ssehub.reset", "id": null, "retry": null}`, "", 0},
		{"object id", `{"data": 1, "event": null, "id": {"x": 1}, "retry": null}`, "", 0},
		{"bad seq", `{"data": 1, "event": null, "id": "x", "ssehub_seq": "x"}`, "", 0},
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
