package sse

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strconv"
)

// Event is one dispatched event, as a browser's EventSource would see it.
type Event struct {
	// Type is the event type; "message" when the stream named none.
	Type string
	// Data is the data buffer with its final LF removed.
	Data string
	// LastEventID is the stream's last event ID at dispatch time. Per the
	// spec it persists across events that carry no id field.
	LastEventID string
	// IDSet reports whether this event itself carried an id field.
	IDSet bool
	// Retry is the reconnection time the stream last set, in milliseconds;
	// zero when it never set one.
	Retry int
}

// ErrLineTooLong is returned by Decoder.Next when a line exceeds MaxLine.
var ErrLineTooLong = errors.New("sse: line too long")

// DefaultMaxLine is the longest line a Decoder accepts unless told otherwise.
const DefaultMaxLine = 16 << 20

// Decoder reads events from a text/event-stream body.
type Decoder struct {
	r       *bufio.Reader
	MaxLine int
	// OnComment, when set, is called with the text after ':' of each comment line.
	OnComment func(string)

	started     bool
	pendingCR   bool
	lastEventID string
	retry       int
	line        []byte
}

// NewDecoder returns a Decoder reading from r.
func NewDecoder(r io.Reader) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 32<<10), MaxLine: DefaultMaxLine}
}

// LastEventID returns the last event ID string the stream has set so far.
func (d *Decoder) LastEventID() string { return d.lastEventID }

// SetLastEventID sets the last event ID the stream starts from, as a
// client that resumes a stream knows it before the first event.
func (d *Decoder) SetLastEventID(id string) { d.lastEventID = id }

// Retry returns the reconnection time the stream last set, in milliseconds.
func (d *Decoder) Retry() int { return d.retry }

// readLine returns the next line without its terminator. Lines end in CRLF,
// LF or CR. A line still open at end of input is returned with io.EOF.
func (d *Decoder) readLine() ([]byte, error) {
	d.line = d.line[:0]
	for {
		b, err := d.r.ReadByte()
		if err != nil {
			return d.line, err
		}
		if d.pendingCR {
			d.pendingCR = false
			if b == '\n' {
				continue // the LF of a CRLF pair
			}
		}
		switch b {
		case '\n':
			return d.line, nil
		case '\r':
			d.pendingCR = true
			return d.line, nil
		}
		if len(d.line) >= d.MaxLine {
			return nil, ErrLineTooLong
		}
		d.line = append(d.line, b)
	}
}

var bom = []byte("\xEF\xBB\xBF")

// Next returns the next dispatched event. It returns io.EOF at the end of the
// stream; an event not closed by a blank line before the end is discarded,
// as the spec requires.
func (d *Decoder) Next() (Event, error) {
	var (
		data    bytes.Buffer
		typ     string
		idSet   bool
		hasData bool
	)
	for {
		line, err := d.readLine()
		if err != nil {
			if err == io.EOF {
				return Event{}, io.EOF
			}
			return Event{}, err
		}
		if !d.started {
			d.started = true
			line = bytes.TrimPrefix(line, bom)
		}
		if len(line) == 0 {
			if !hasData {
				data.Reset()
				typ = ""
				idSet = false
				continue
			}
			s := data.String()
			s = s[:len(s)-1] // the trailing LF
			if typ == "" {
				typ = "message"
			}
			return Event{Type: typ, Data: s, LastEventID: d.lastEventID, IDSet: idSet, Retry: d.retry}, nil
		}
		if line[0] == ':' {
			if d.OnComment != nil {
				d.OnComment(string(line[1:]))
			}
			continue
		}
		field, value := line, []byte(nil)
		if i := bytes.IndexByte(line, ':'); i >= 0 {
			field, value = line[:i], line[i+1:]
			if len(value) > 0 && value[0] == ' ' {
				value = value[1:]
			}
		}
		switch string(field) {
		case "event":
			typ = string(value)
		case "data":
			data.Write(value)
			data.WriteByte('\n')
			hasData = true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				d.lastEventID = string(value)
				idSet = true
			}
		case "retry":
			if len(value) > 0 && allDigits(value) {
				if n, err := strconv.Atoi(string(value)); err == nil {
					d.retry = n
				}
			}
		}
	}
}

func allDigits(b []byte) bool {
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}
