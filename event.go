package ssehub

import (
	"bytes"
	"time"

	"github.com/ssehub/ssehub/internal/sse"
)

// Event is a published message as brokers deliver it: its id assigned and
// its wire form encoded once. The same *Event goes to every subscriber, so
// an Event must not be modified after NewEvent returns it.
type Event struct {
	Channel string
	ID      string
	Type    string
	// Data is the text of the event's data field: compact JSON for messages
	// published through ssehub, or a raw string for foreign publishers that
	// send strings unquoted (flask-sse). It usually shares its memory with
	// the event's frame, and must not be modified.
	Data  []byte
	Retry int
	// Seq orders the events of one broker: larger is later, across all
	// channels. Zero means the event has no place in that order (a message
	// from a foreign publisher that bypassed the broker's history); it is
	// delivered live but never replayed.
	Seq uint64
	// Time is when the event was published.
	Time time.Time

	frame []byte
	// idLine is, in a copy of an event made by withID for one subscriber,
	// the id line that goes out before frame, which is the original's
	// frame without its own id line and shared with it.
	idLine    []byte
	dataApart bool // Data is not within frame
	position  bool // only sets the client's last event id (see positionEvent)
}

// NewEvent returns an Event with its wire form encoded. The caller must have
// validated id and typ (ValidID; Message.Normalize does both). The Event
// does not keep data: when data is one line, as compact JSON is, Event.Data
// is the copy inside the frame, so the event's text is held once.
func NewEvent(channel, id, typ string, data []byte, retry int, seq uint64, t time.Time) *Event {
	e := &Event{Channel: channel, ID: id, Type: typ, Retry: retry, Seq: seq, Time: t}
	e.frame = sse.AppendEvent(make([]byte, 0, frameSize(id, typ, data)), id, typ, data, retry)
	if bytes.ContainsAny(data, "\r\n") {
		// Split over several data lines in the frame: kept apart.
		e.Data, e.dataApart = bytes.Clone(data), true
	} else {
		// The frame ends with "data: " (or "data:" when empty), data, "\n\n".
		end := len(e.frame) - 2
		e.Data = e.frame[end-len(data) : end : end]
	}
	return e
}

func frameSize(id, typ string, data []byte) int {
	// Field names, separators and a few extra data lines.
	return len(id) + len(typ) + len(data) + 48
}

// eventOverhead is what an event costs beyond its text: the Event struct,
// slice and string headers, a slot in its channel's feed and the share of
// the channel's own state. History budgets count it for every event, so
// that many tiny events cannot hold much more memory than the budget says.
const eventOverhead = 256

// size is about how many bytes of memory e holds.
func (e *Event) size() int64 {
	n := cap(e.frame) + cap(e.idLine) + len(e.ID) + len(e.Type) + len(e.Channel) + eventOverhead
	if e.dataApart {
		n += cap(e.Data)
	}
	return int64(n)
}

// Frame returns the event in text/event-stream form, ending with the blank
// line that dispatches it. The slice is shared and must not be modified.
// An event a subscription got with an id of its own (see ChannelOrderer)
// builds it anew.
func (e *Event) Frame() []byte {
	if e.idLine != nil {
		return append(append(make([]byte, 0, e.frameLen()), e.idLine...), e.frame...)
	}
	return e.frame
}

// frameLen is the length of the event's text/event-stream form.
func (e *Event) frameLen() int { return len(e.idLine) + len(e.frame) }

// withID returns a copy of e that goes out with id instead of e's own
// id, for one subscriber. The copy shares e's data and, since NewEvent
// writes the id line first, the rest of e's frame: a stream over many
// channels costs an id line per event, not a copy of each event.
func (e *Event) withID(id string) *Event {
	c := *e
	c.ID = id
	line := make([]byte, 0, len(id)+5)
	line = append(line, "id: "...)
	line = append(line, id...)
	c.idLine = append(line, '\n')
	if e.idLine != nil {
		return &c // e.frame has no id line already
	}
	if rest, ok := cutIDLine(e.frame, e.ID); ok {
		c.frame = rest
		return &c
	}
	// A frame of another shape: copied without its id fields.
	frame := make([]byte, 0, len(e.frame))
	for rest := e.frame; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line = rest[:i+1]
		}
		rest = rest[len(line):]
		// An id field: "id" alone, or "id:" and its value.
		if name := bytes.TrimSuffix(line, []byte("\n")); string(name) == "id" || bytes.HasPrefix(name, []byte("id:")) {
			continue
		}
		frame = append(frame, line...)
	}
	c.frame = frame
	return &c
}

// cutIDLine returns frame without its first line when that line is the
// id field NewEvent writes for id, and reports whether it was. An event
// without an id has no id line: its frame is returned whole.
func cutIDLine(frame []byte, id string) ([]byte, bool) {
	if id == "" {
		return frame, true
	}
	n := len("id: ") + len(id)
	if len(frame) <= n || string(frame[:4]) != "id: " || string(frame[4:n]) != id || frame[n] != '\n' {
		return nil, false
	}
	return frame[n+1:], true
}
