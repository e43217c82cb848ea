package sse

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
)

// decodeAll decodes every event of stream and fails the test on any error
// other than the end of input.
func decodeAll(t *testing.T, stream []byte) []Event {
	t.Helper()
	d := NewDecoder(bytes.NewReader(stream))
	var events []Event
	for {
		e, err := d.Next()
		if err == io.EOF {
			return events
		}
		if err != nil {
			t.Fatalf("decode %q: %v", stream, err)
		}
		events = append(events, e)
	}
}

// TestAppendEventData checks the exact frame written for each kind of data
// and that a spec decoder reads the payload back (CR and CRLF come back as
// LF, as the spec makes them).
func TestAppendEventData(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		data  string
		frame string
		want  string // data as the decoder dispatches it
	}{
		{"plain", "hello", "data: hello\n\n", "hello"},
		{"empty", "", "data:\n\n", ""},
		{"LF", "a\nb", "data: a\ndata: b\n\n", "a\nb"},
		{"CR", "a\rb", "data: a\ndata: b\n\n", "a\nb"},
		{"CRLF", "a\r\nb", "data: a\ndata: b\n\n", "a\nb"},
		{"mixed", "a\rb\nc\r\nd\n\re", "data: a\ndata: b\ndata: c\ndata: d\ndata:\ndata: e\n\n", "a\nb\nc\nd\n\ne"},
		{"LF CR is two line ends", "a\n\rb", "data: a\ndata:\ndata: b\n\n", "a\n\nb"},
		{"leading newline", "\nx", "data:\ndata: x\n\n", "\nx"},
		{"trailing newline", "x\n", "data: x\ndata:\n\n", "x\n"},
		{"trailing CRLF", "x\r\n", "data: x\ndata:\n\n", "x\n"},
		{"trailing CR", "x\r", "data: x\ndata:\n\n", "x\n"},
		{"consecutive newlines", "a\n\n\nb", "data: a\ndata:\ndata:\ndata: b\n\n", "a\n\n\nb"},
		{"only LF", "\n", "data:\ndata:\n\n", "\n"},
		{"only CRLF", "\r\n", "data:\ndata:\n\n", "\n"},
		{"only CR", "\r", "data:\ndata:\n\n", "\n"},
		{"two LF", "\n\n", "data:\ndata:\ndata:\n\n", "\n\n"},
		{"leading space", " x", "data:  x\n\n", " x"},
		{"leading spaces on every line", "  a\n b", "data:   a\ndata:  b\n\n", "  a\n b"},
		{"only a space", " ", "data:  \n\n", " "},
		{"trailing space", "x ", "data: x \n\n", "x "},
		{"tab", "\tx", "data: \tx\n\n", "\tx"},
		{"colon first", ":not a comment", "data: :not a comment\n\n", ":not a comment"},
		{"colon line after newline", "a\n:b", "data: a\ndata: :b\n\n", "a\n:b"},
		{"literal data:", "data:", "data: data:\n\n", "data:"},
		{"literal data: lines", "data:\ndata: x", "data: data:\ndata: data: x\n\n", "data:\ndata: x"},
		{"field-like lines", "id: 7\nevent: x\nretry: 1", "data: id: 7\ndata: event: x\ndata: retry: 1\n\n", "id: 7\nevent: x\nretry: 1"},
		{"JSON", `{"a":"b:c","d":[1,2]}`, "data: {\"a\":\"b:c\",\"d\":[1,2]}\n\n", `{"a":"b:c","d":[1,2]}`},
		{"multi-byte", "héllo wörld ñ 日本語", "data: héllo wörld ñ 日本語\n\n", "héllo wörld ñ 日本語"},
		{"4-byte emoji", "😀🚀\n𝄞", "data: 😀🚀\ndata: 𝄞\n\n", "😀🚀\n𝄞"},
		{"U+2028 not split", "a\u2028b", "data: a\u2028b\n\n", "a\u2028b"},
		{"U+2029 not split", "a\u2029b", "data: a\u2029b\n\n", "a\u2029b"},
		{"U+0085 not split", "a\u0085b", "data: a\u0085b\n\n", "a\u0085b"},
		{"VT not split", "a\vb", "data: a\vb\n\n", "a\vb"},
		{"FF not split", "a\fb", "data: a\fb\n\n", "a\fb"},
		{"NUL passes", "a\x00b", "data: a\x00b\n\n", "a\x00b"},
		{"BOM inside data", "\uFEFFx", "data: \uFEFFx\n\n", "\uFEFFx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := AppendEvent(nil, "", "", []byte(tt.data), 0)
			if string(got) != tt.frame {
				t.Fatalf("AppendEvent(%q) = %q, want %q", tt.data, got, tt.frame)
			}
			events := decodeAll(t, got)
			if len(events) != 1 {
				t.Fatalf("decoded %d events from %q, want 1", len(events), got)
			}
			if e := events[0]; e.Data != tt.want || e.Type != "message" || e.IDSet {
				t.Fatalf("decoded %+v, want data %q, type message, no id", e, tt.want)
			}
		})
	}
}

// TestAppendEventFields checks the id, event and retry lines, and that a
// leading space in each survives.
func TestAppendEventFields(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		id, typ  string
		retry    int
		frame    string
		wantType string
	}{
		{"none", "", "", 0, "data: x\n\n", "message"},
		{"id", "42", "", 0, "id: 42\ndata: x\n\n", "message"},
		{"type", "", "cool", 0, "event: cool\ndata: x\n\n", "cool"},
		{"explicit message", "", "message", 0, "event: message\ndata: x\n\n", "message"},
		{"retry", "", "", 1500, "retry: 1500\ndata: x\n\n", "message"},
		{"retry zero omitted", "", "", 0, "data: x\n\n", "message"},
		{"all", "7", "t", 10, "id: 7\nevent: t\nretry: 10\ndata: x\n\n", "t"},
		{"id leading space", " 7", "", 0, "id:  7\ndata: x\n\n", "message"},
		{"type leading space", "", " t", 0, "event:  t\ndata: x\n\n", " t"},
		{"id with colon", "a:b", "", 0, "id: a:b\ndata: x\n\n", "message"},
		{"type with colon", "", "a:b", 0, "event: a:b\ndata: x\n\n", "a:b"},
		{"unicode id and type", "é😀", "ü\u2028", 0, "id: é😀\nevent: ü\u2028\ndata: x\n\n", "ü\u2028"},
		{"epoch float id", "1795238353.220689", "", 0, "id: 1795238353.220689\ndata: x\n\n", "message"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := AppendEvent(nil, tt.id, tt.typ, []byte("x"), tt.retry)
			if string(got) != tt.frame {
				t.Fatalf("AppendEvent = %q, want %q", got, tt.frame)
			}
			events := decodeAll(t, got)
			if len(events) != 1 {
				t.Fatalf("decoded %d events from %q, want 1", len(events), got)
			}
			e := events[0]
			want := Event{Type: tt.wantType, Data: "x", LastEventID: tt.id, IDSet: tt.id != "", Retry: tt.retry}
			if e != want {
				t.Fatalf("decoded %+v, want %+v", e, want)
			}
		})
	}
}

// TestAppendEventAppends checks that AppendEvent extends dst and that
// consecutive frames decode as separate events, the id persisting.
func TestAppendEventAppends(t *testing.T) {
	t.Parallel()
	buf := []byte("retry: 5\n\n")
	buf = AppendEvent(buf, "1", "a", []byte("one\n"), 0)
	buf = AppendEvent(buf, "", "", []byte(""), 0)
	buf = AppendEvent(buf, "3", "", []byte("three"), 0)
	buf = append(buf, Heartbeat...)
	buf = AppendRetry(buf, 250)
	buf = AppendEvent(buf, "", "c", []byte("four"), 0)
	want := []Event{
		{Type: "a", Data: "one\n", LastEventID: "1", IDSet: true, Retry: 5},
		{Type: "message", Data: "", LastEventID: "1", Retry: 5},
		{Type: "message", Data: "three", LastEventID: "3", IDSet: true, Retry: 5},
		{Type: "c", Data: "four", LastEventID: "3", Retry: 250},
	}
	got := decodeAll(t, buf)
	if len(got) != len(want) {
		t.Fatalf("decoded %d events, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestAppendEventLarge encodes events of more than 1 MiB and decodes them
// back whole.
func TestAppendEventLarge(t *testing.T) {
	t.Parallel()
	line := strings.Repeat("0123456789abcdef", 1<<16) // 1 MiB
	tests := []struct {
		name, data, want string
		lines            int
	}{
		{"one line", line + "x", line + "x", 1},
		{"many lines", strings.Repeat("ab\r\n", 300_000) + line, strings.Repeat("ab\n", 300_000) + line, 300_001},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			frame := AppendEvent(nil, "big", "", []byte(tt.data), 0)
			if n := bytes.Count(frame, []byte("\ndata: ")); n != tt.lines {
				t.Fatalf("frame has %d data lines, want %d", n, tt.lines)
			}
			events := decodeAll(t, frame)
			if len(events) != 1 {
				t.Fatalf("decoded %d events, want 1", len(events))
			}
			if events[0].Data != tt.want {
				t.Fatalf("decoded %d bytes of data, want %d", len(events[0].Data), len(tt.want))
			}
		})
	}
}

func TestAppendRetry(t *testing.T) {
	t.Parallel()
	got := AppendRetry([]byte(":\n"), 3000)
	if want := ":\nretry: 3000\n"; string(got) != want {
		t.Fatalf("AppendRetry = %q, want %q", got, want)
	}
	d := NewDecoder(bytes.NewReader(got))
	if _, err := d.Next(); err != io.EOF {
		t.Fatalf("Next = %v, want io.EOF: a retry line dispatches no event", err)
	}
	if d.Retry() != 3000 {
		t.Fatalf("Retry = %d, want 3000", d.Retry())
	}
}

// ExampleAppendEvent shows the frame of an event whose data spans lines.
func ExampleAppendEvent() {
	frame := AppendEvent(nil, "42", "update", []byte("first\nsecond"), 0)
	os.Stdout.Write(frame)
	// Output:
	// id: 42
	// event: update
	// data: first
	// data: second
}
