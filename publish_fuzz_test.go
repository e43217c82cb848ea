package ssehub_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// lastEventBroker remembers the last event a Broker published.
type lastEventBroker struct {
	ssehub.Broker
	mu   sync.Mutex
	last *ssehub.Event
}

func (b *lastEventBroker) Publish(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
	e, err := b.Broker.Publish(ctx, m)
	b.mu.Lock()
	b.last = e
	b.mu.Unlock()
	return e, err
}

func (b *lastEventBroker) take() *ssehub.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.last
	b.last = nil
	return e
}

// FuzzPublishHandler posts arbitrary bodies to the publish handler. It must
// never panic or answer 5xx, must answer JSON, and a message it accepts must
// come out as exactly one event carrying what the body said. The seed
// corpus is in testdata/fuzz/FuzzPublishHandler.
func FuzzPublishHandler(f *testing.F) {
	mem := ssehub.NewMemoryBroker(ssehub.MemoryConfig{HistorySize: -1})
	broker := &lastEventBroker{Broker: mem}
	hub, err := ssehub.New(ssehub.Config{Broker: broker, MaxMessageBytes: 4096})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { hub.Close(context.Background()); mem.Close(context.Background()) })
	handler := hub.PublishHandler()

	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/publish", bytes.NewReader(body)))
		var out map[string]string
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("status %d, answer not a JSON object of strings: %q", w.Code, w.Body)
		}
		e := broker.take()
		if w.Code != http.StatusOK {
			if w.Code >= 500 || w.Code < 400 || out["error"] == "" || out["code"] == "" {
				t.Fatalf("status %d %v", w.Code, out)
			}
			if e != nil {
				t.Fatalf("refused with %d but published %+v", w.Code, e)
			}
			return
		}
		if e == nil || out["id"] != e.ID || out["channel"] != e.Channel || e.ID == "" {
			t.Fatalf("answer %v for event %+v", out, e)
		}
		checkFrame(t, e)
		checkAsSent(t, body, e)
	})
}

// checkFrame decodes e's wire form: exactly one event with e's fields.
func checkFrame(t *testing.T, e *ssehub.Event) {
	t.Helper()
	if ssehub.ValidChannel(e.Channel) != nil || !json.Valid(e.Data) || bytes.ContainsAny(e.Data, "\r\n") {
		t.Fatalf("event %+v: bad channel or data", e)
	}
	dec := sse.NewDecoder(bytes.NewReader(e.Frame()))
	got, err := dec.Next()
	if err != nil {
		t.Fatalf("frame %q: %v", e.Frame(), err)
	}
	typ := e.Type
	if typ == "" {
		typ = "message"
	}
	if got.Type != typ || got.Data != string(e.Data) || got.LastEventID != e.ID || !got.IDSet || got.Retry != e.Retry {
		t.Fatalf("frame %q decodes to %+v, want %+v", e.Frame(), got, e)
	}
	if extra, err := dec.Next(); err != io.EOF {
		t.Fatalf("frame %q holds a second event %+v (%v)", e.Frame(), extra, err)
	}
}

// checkAsSent compares an accepted event with the body, read on its own
// terms, when the body is an object whose keys are the documented ones
// spelled exactly and each given once (encoding/json also matches keys
// case-insensitively, and a later null does not clear a field).
func checkAsSent(t *testing.T, body []byte, e *ssehub.Event) {
	t.Helper()
	fields, ok := exactFields(body)
	if !ok {
		return
	}
	str := func(name string) string {
		var s string
		if raw, ok := fields[name]; ok {
			json.Unmarshal(raw, &s)
		}
		return s
	}
	if ch := str("channel"); e.Channel != ch && !(ch == "" && e.Channel == ssehub.DefaultChannel) {
		t.Fatalf("channel %q, sent %q", e.Channel, ch)
	}
	if e.Type != str("type") {
		t.Fatalf("type %q, sent %q", e.Type, str("type"))
	}
	if raw, ok := fields["id"]; ok && string(raw) != "null" {
		want := str("id")
		if raw[0] != '"' {
			want = string(raw)
		}
		if want != "" && e.ID != want {
			t.Fatalf("id %q, sent %s", e.ID, raw)
		}
	}
	if raw, ok := fields["retry"]; ok && string(raw) != "null" {
		if n, err := strconv.Atoi(string(raw)); err != nil || e.Retry != n {
			t.Fatalf("retry %d, sent %s", e.Retry, raw)
		}
	}
	var sent, got any
	d := json.NewDecoder(bytes.NewReader(fields["data"]))
	d.UseNumber()
	if err := d.Decode(&sent); err != nil {
		t.Fatalf("accepted data %s: %v", fields["data"], err)
	}
	d = json.NewDecoder(bytes.NewReader(e.Data))
	d.UseNumber()
	if err := d.Decode(&got); err != nil || !reflect.DeepEqual(sent, got) {
		t.Fatalf("data %s, sent %s", e.Data, fields["data"])
	}
}

// exactFields returns the members of the JSON object body when each key is
// one of the publish request's, spelled exactly and given once.
func exactFields(body []byte) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	fields := map[string]json.RawMessage{}
	for dec.More() {
		tok, err := dec.Token()
		key, isKey := tok.(string)
		if err != nil || !isKey {
			return nil, false
		}
		switch key {
		case "channel", "data", "type", "id", "retry":
		default:
			return nil, false
		}
		if _, dup := fields[key]; dup {
			return nil, false
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, false
		}
		fields[key] = raw
	}
	return fields, true
}
