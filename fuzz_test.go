package ssehub_test

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ssehub/ssehub"
	"github.com/ssehub/ssehub/internal/sse"
)

// FuzzRoundTrip encodes an event from any id, type, data and retry the
// package accepts and reads it back with the independent spec decoder. The
// decoded event must equal the input, except that CR and CRLF in data come
// back as LF, as the spec makes them. Data that is valid JSON is also
// checked after Message.Normalize compacts it, which must leave nothing to
// normalize.
func FuzzRoundTrip(f *testing.F) {
	f.Add("", "", []byte(`{"a":1}`), 0)
	f.Add("42", "cool", []byte(`{"code":"COOL","msg":"cool message"}`), 6000)
	f.Add(" 1", " t", []byte(" leading space"), 1)
	f.Add("1795238353.220689", "message", []byte("line1\nline2"), 0)
	f.Add("é", "😀", []byte("a\rb\r\nc\n\nd\r"), 0)
	f.Add("", "", []byte(""), 0)
	f.Add("", "", []byte("\n"), 0)
	f.Add("a:b", "x:y", []byte(":comment\ndata:\n"), 0)
	f.Add("\u2028", "\u0085", []byte("a\u2028b\u2029c\u0085d\ve\ff\x00g"), 0)
	f.Fuzz(func(t *testing.T, id, typ string, data []byte, retry int) {
		m := ssehub.Message{Data: json.RawMessage(`null`), ID: id, Type: typ, Retry: retry}
		if m.Normalize() != nil {
			t.Skip()
		}
		checkRoundTrip(t, id, typ, data, retry)
		if json.Valid(data) {
			m.Data = data
			if err := m.Normalize(); err != nil {
				if !utf8.Valid(data) {
					return
				}
				t.Fatalf("Normalize rejected valid JSON %q: %v", data, err)
			}
			if bytes.ContainsAny(m.Data, "\r\n") {
				t.Fatalf("compacted data %q holds a raw line break", m.Data)
			}
			checkRoundTrip(t, id, typ, m.Data, retry)
		}
	})
}

// checkRoundTrip encodes the event twice in a row, so that a frame that
// ends too early or too late shows up, and decodes both.
func checkRoundTrip(t *testing.T, id, typ string, data []byte, retry int) {
	t.Helper()
	e := ssehub.NewEvent("c", id, typ, data, retry, 1, time.Time{})
	stream := append(bytes.Clone(e.Frame()), e.Frame()...)
	d := sse.NewDecoder(bytes.NewReader(stream))
	want := sse.Event{
		Type:        typ,
		Data:        strings.ReplaceAll(strings.ReplaceAll(string(data), "\r\n", "\n"), "\r", "\n"),
		LastEventID: id,
		IDSet:       id != "",
		Retry:       max(retry, 0),
	}
	if want.Type == "" {
		want.Type = "message"
	}
	for i := range 2 {
		got, err := d.Next()
		if err != nil {
			t.Fatalf("event %d of %q: %v", i, stream, err)
		}
		if got != want {
			t.Fatalf("event %d of %q:\n got %+v\nwant %+v", i, stream, got, want)
		}
	}
	if got, err := d.Next(); err != io.EOF {
		t.Fatalf("after two events of %q: got %+v, %v; want io.EOF", stream, got, err)
	}
}
