package ssehub

import (
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
	// send strings unquoted (flask-sse).
	Data  []byte
	Retry int
	// Seq orders the events of one broker: larger is later, across all
	// channels. Zero means the event has no place in that order (a message
	// from a foreign publisher that bypassed the broker's history); it is
	// delivered live but never replayed.
	Seq uint64
	// Time is when the event was published.
	Time time.Time

	frame    []byte
	position bool // only sets the client's last event id (see positionEvent)
}

// NewEvent returns an Event with its wire form encoded. The caller must have
// validated id and typ (ValidID; Message.Normalize does both).
func NewEvent(channel, id, typ string, data []byte, retry int, seq uint64, t time.Time) *Event {
	e := &Event{Channel: channel, ID: id, Type: typ, Data: data, Retry: retry, Seq: seq, Time: t}
	e.frame = sse.AppendEvent(make([]byte, 0, frameSize(e)), id, typ, data, retry)
	return e
}

func frameSize(e *Event) int {
	// Field names, separators and a few extra data lines.
	return len(e.ID) + len(e.Type) + len(e.Data) + 48
}

// Frame returns the event in text/event-stream form, ending with the blank
// line that dispatches it. The slice is shared and must not be modified.
func (e *Event) Frame() []byte { return e.frame }
