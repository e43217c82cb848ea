package sse

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// TestDecoderSpec checks the decoder against the parsing rules of WHATWG
// HTML §9.2.5 and §9.2.6. Every stream is read both in one piece and one
// byte at a time, so a CRLF split across reads counts once.
func TestDecoderSpec(t *testing.T) {
	t.Parallel()
	longComment := strings.Repeat("x", 2048)
	tests := []struct {
		name     string
		stream   string
		want     []Event
		comments []string
		lastID   string // LastEventID after the stream
		retry    int    // Retry after the stream
	}{
		{
			name:   "LF",
			stream: "data: a\ndata: b\n\n",
			want:   []Event{{Type: "message", Data: "a\nb"}},
		},
		{
			name:   "CR",
			stream: "data: a\rdata: b\r\r",
			want:   []Event{{Type: "message", Data: "a\nb"}},
		},
		{
			name:   "CRLF",
			stream: "data: a\r\ndata: b\r\n\r\n",
			want:   []Event{{Type: "message", Data: "a\nb"}},
		},
		{
			name:   "mixed line ends",
			stream: "data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\rdata: e\n\n",
			want:   []Event{{Type: "message", Data: "a\nb\nc"}, {Type: "message", Data: "d"}, {Type: "message", Data: "e"}},
		},
		{
			name:   "LF CR is two line ends",
			stream: "data: a\n\rdata: b\n\n",
			want:   []Event{{Type: "message", Data: "a"}, {Type: "message", Data: "b"}},
		},
		{
			name:   "BOM stripped",
			stream: "\uFEFFdata: a\n\n",
			want:   []Event{{Type: "message", Data: "a"}},
		},
		{
			name:   "second BOM kept",
			stream: "\uFEFF\uFEFFdata: a\n\ndata: b\n\n",
			want:   []Event{{Type: "message", Data: "b"}},
		},
		{
			name:   "BOM on a later line kept",
			stream: "data: a\n\n\uFEFFdata: b\n\ndata: c\n\n",
			want:   []Event{{Type: "message", Data: "a"}, {Type: "message", Data: "c"}},
		},
		{
			name:     "comments",
			stream:   ": hello\ndata: a\n:\n::x\n\n:" + longComment + "\r\n:\x00\r\n",
			want:     []Event{{Type: "message", Data: "a"}},
			comments: []string{" hello", "", ":x", longComment, "\x00"},
		},
		{
			name:     "only comments",
			stream:   ":a\n\n:b\n\n",
			comments: []string{"a", "b"},
		},
		{
			name:   "no space after colon",
			stream: "data:a\n\n",
			want:   []Event{{Type: "message", Data: "a"}},
		},
		{
			name:   "only one space removed",
			stream: "data:  a\nevent:  t\nid:  1\n\n",
			want:   []Event{{Type: " t", Data: " a", LastEventID: " 1", IDSet: true}},
			lastID: " 1",
		},
		{
			name:   "colon in value",
			stream: "data: a:b\ndata::c\n\n",
			want:   []Event{{Type: "message", Data: "a:b\n:c"}},
		},
		{
			name:   "empty data dispatches",
			stream: "data:\n\ndata\n\n",
			want:   []Event{{Type: "message", Data: ""}, {Type: "message", Data: ""}},
		},
		{
			name:   "field without colon",
			stream: "data\ndata\n\nevent\ndata: x\n\n",
			want:   []Event{{Type: "message", Data: "\n"}, {Type: "message", Data: "x"}},
		},
		{
			name:   "unknown fields ignored",
			stream: "foo: bar\nDATA: x\nData: y\ndata : z\nevents: q\ndata: a\n\n",
			want:   []Event{{Type: "message", Data: "a"}},
		},
		{
			name:   "unknown field alone dispatches nothing",
			stream: "foo: bar\n\ndata: a\n\n",
			want:   []Event{{Type: "message", Data: "a"}},
		},
		{
			name:   "event type cleared after dispatch",
			stream: "event: x\ndata: a\n\ndata: b\n\n",
			want:   []Event{{Type: "x", Data: "a"}, {Type: "message", Data: "b"}},
		},
		{
			name:   "event type of an event without data dropped",
			stream: "event: x\n\ndata: b\n\n",
			want:   []Event{{Type: "message", Data: "b"}},
		},
		{
			name:   "last field wins",
			stream: "event: x\nevent: y\nid: 1\nid: 2\ndata: a\n\n",
			want:   []Event{{Type: "y", Data: "a", LastEventID: "2", IDSet: true}},
			lastID: "2",
		},
		{
			name:   "id persists",
			stream: "id: 1\ndata: a\n\ndata: b\n\n",
			want:   []Event{{Type: "message", Data: "a", LastEventID: "1", IDSet: true}, {Type: "message", Data: "b", LastEventID: "1"}},
			lastID: "1",
		},
		{
			name:   "id without data still sets the last event id",
			stream: "id: 5\n\ndata: a\n\n",
			want:   []Event{{Type: "message", Data: "a", LastEventID: "5"}},
			lastID: "5",
		},
		{
			name:   "id with NUL ignored",
			stream: "id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
			want:   []Event{{Type: "message", Data: "a", LastEventID: "1", IDSet: true}, {Type: "message", Data: "b", LastEventID: "1"}},
			lastID: "1",
		},
		{
			name:   "empty id resets",
			stream: "id: 1\ndata: a\n\nid\ndata: b\n\nid: 2\ndata: c\n\nid:\ndata: d\n\n",
			want: []Event{
				{Type: "message", Data: "a", LastEventID: "1", IDSet: true},
				{Type: "message", Data: "b", LastEventID: "", IDSet: true},
				{Type: "message", Data: "c", LastEventID: "2", IDSet: true},
				{Type: "message", Data: "d", LastEventID: "", IDSet: true},
			},
		},
		{
			name:   "retry digits only",
			stream: "retry: 100\ndata: a\n\nretry: 1x\ndata: b\n\nretry: -5\ndata: c\n\nretry:\ndata: d\n\nretry: 1.5\nretry:  7\nretry\ndata: e\n\nretry: 0200\ndata: f\n\n",
			want: []Event{
				{Type: "message", Data: "a", Retry: 100},
				{Type: "message", Data: "b", Retry: 100},
				{Type: "message", Data: "c", Retry: 100},
				{Type: "message", Data: "d", Retry: 100},
				{Type: "message", Data: "e", Retry: 100},
				{Type: "message", Data: "f", Retry: 200},
			},
			retry: 200,
		},
		{
			name:   "retry alone dispatches nothing",
			stream: "retry: 3000\n\n",
			retry:  3000,
		},
		{
			name:   "unterminated final event discarded",
			stream: "data: a\n\ndata: b\n",
			want:   []Event{{Type: "message", Data: "a"}},
		},
		{
			name:   "unterminated final line discarded",
			stream: "data: a\n\ndata: b",
			want:   []Event{{Type: "message", Data: "a"}},
		},
		{
			name:   "final CR ends the event",
			stream: "data: a\r\r",
			want:   []Event{{Type: "message", Data: "a"}},
		},
		{
			name:   "blank lines between events",
			stream: "\n\r\n\rdata: a\n\n\n\ndata: b\n\n",
			want:   []Event{{Type: "message", Data: "a"}, {Type: "message", Data: "b"}},
		},
		{
			name:   "NUL and separators in data",
			stream: "data: a\x00b\u2028c\u0085d\ve\ff\n\n",
			want:   []Event{{Type: "message", Data: "a\x00b\u2028c\u0085d\ve\ff"}},
		},
	}
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"bytewise", iotest.OneByteReader},
	}
	for _, tt := range tests {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				t.Parallel()
				d := NewDecoder(rd.wrap(strings.NewReader(tt.stream)))
				var comments []string
				d.OnComment = func(c string) { comments = append(comments, c) }
				var got []Event
				for {
					e, err := d.Next()
					if err == io.EOF {
						break
					}
					if err != nil {
						t.Fatalf("Next: %v", err)
					}
					got = append(got, e)
				}
				if !slices.Equal(got, tt.want) {
					t.Errorf("events\n got %+v\nwant %+v", got, tt.want)
				}
				if !slices.Equal(comments, tt.comments) {
					t.Errorf("comments = %q, want %q", comments, tt.comments)
				}
				if d.LastEventID() != tt.lastID {
					t.Errorf("LastEventID = %q, want %q", d.LastEventID(), tt.lastID)
				}
				if d.Retry() != tt.retry {
					t.Errorf("Retry = %d, want %d", d.Retry(), tt.retry)
				}
			})
		}
	}
}

func TestDecoderMaxLine(t *testing.T) {
	t.Parallel()
	d := NewDecoder(strings.NewReader("data: 12345\n\ndata: 123456\n\n"))
	d.MaxLine = len("data: 12345")
	if e, err := d.Next(); err != nil || e.Data != "12345" {
		t.Fatalf("Next = %+v, %v; want data 12345", e, err)
	}
	if _, err := d.Next(); !errors.Is(err, ErrLineTooLong) {
		t.Fatalf("Next = %v, want ErrLineTooLong", err)
	}
}

func TestDecoderReadError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	d := NewDecoder(io.MultiReader(strings.NewReader("data: a\n\ndata: b\n"), iotest.ErrReader(boom)))
	if e, err := d.Next(); err != nil || e.Data != "a" {
		t.Fatalf("Next = %+v, %v; want data a", e, err)
	}
	if _, err := d.Next(); !errors.Is(err, boom) {
		t.Fatalf("Next = %v, want %v", err, boom)
	}
}
