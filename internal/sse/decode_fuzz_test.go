package sse

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// fuzzDecodeAll decodes every event of r with lines bounded to 4 KiB, and
// reports how the stream ended.
func fuzzDecodeAll(t *testing.T, r io.Reader) ([]Event, error) {
	t.Helper()
	d := NewDecoder(r)
	d.MaxLine = 4 << 10
	var events []Event
	for {
		e, err := d.Next()
		if err != nil {
			if err != io.EOF && !errors.Is(err, ErrLineTooLong) {
				t.Fatalf("unexpected error %v", err)
			}
			return events, err
		}
		events = append(events, e)
	}
}

// FuzzDecoder feeds arbitrary bytes to the decoder. It must not panic, the
// events it yields must be well formed, how the input is split into reads
// must not matter, one leading BOM must be ignored, and each event must
// survive encoding and decoding again. The seed corpus is in
// testdata/fuzz/FuzzDecoder.
func FuzzDecoder(f *testing.F) {
	f.Fuzz(func(t *testing.T, in []byte) {
		events, end := fuzzDecodeAll(t, bytes.NewReader(in))
		for _, e := range events {
			if e.Type == "" || strings.ContainsAny(e.Type, "\r\n") || strings.Contains(e.Data, "\r") ||
				strings.ContainsAny(e.LastEventID, "\r\n\x00") || e.Retry < 0 {
				t.Fatalf("malformed event %+v", e)
			}
		}

		// Reads of one byte see the same stream: a CRLF split between two
		// reads counts once.
		bytewise, bend := fuzzDecodeAll(t, iotest.OneByteReader(bytes.NewReader(in)))
		if !reflect.DeepEqual(events, bytewise) || end != bend {
			t.Fatalf("one-byte reads: %+v (%v), whole: %+v (%v)", bytewise, bend, events, end)
		}

		// One leading BOM is stripped, and only one. (The BOM counts
		// towards the first line's length, hence the bound.)
		if !bytes.HasPrefix(in, bom) && len(in) < 4<<10-len(bom) {
			withBOM, bomEnd := fuzzDecodeAll(t, bytes.NewReader(append(bytes.Clone(bom), in...)))
			if !reflect.DeepEqual(events, withBOM) || bomEnd != end {
				t.Fatalf("with a BOM: %+v, without: %+v", withBOM, events)
			}
		}

		// Each event, encoded again, decodes to itself.
		for _, e := range events {
			id := ""
			if e.IDSet {
				id = e.LastEventID
			}
			retry := 0
			if e.Retry > 0 {
				retry = e.Retry
			}
			frame := AppendEvent(nil, id, e.Type, []byte(e.Data), retry)
			again, _ := fuzzDecodeAll(t, bytes.NewReader(frame))
			if len(again) != 1 {
				t.Fatalf("event %+v encodes to %q, which decodes to %d events", e, frame, len(again))
			}
			g := again[0]
			if g.Type != e.Type || g.Data != e.Data || g.IDSet != (id != "") || g.LastEventID != id || g.Retry != retry {
				t.Fatalf("event %+v encodes to %q, which decodes to %+v", e, frame, g)
			}
		}
	})
}
