package natsbroker

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ssehub/ssehub"
)

var errNotChannel = errors.New("subject names no valid channel")

// decode turns a message of the events stream into an Event. The body is
// the data, which must be JSON; the headers hold the type, the publisher's
// id and the retry. Anything that would break the stream is an error: such
// a message is skipped, never sent.
func (b *Broker) decode(tag, subject string, h nats.Header, data []byte, seq uint64, at time.Time) (*ssehub.Event, error) {
	name := b.channelOf(subject)
	if name == "" || ssehub.ValidChannel(name) != nil {
		return nil, errNotChannel
	}
	m := ssehub.Message{Channel: name, Data: data}
	if h != nil {
		m.Type = h.Get(HeaderType)
		m.ID = h.Get(HeaderID)
		if r := h.Get(HeaderRetry); r != "" {
			n, err := strconv.Atoi(r)
			if err != nil {
				return nil, fmt.Errorf("retry %q is not a number", r)
			}
			m.Retry = n
		}
	}
	if err := m.Normalize(); err != nil {
		return nil, err
	}
	if m.ID == "" {
		m.ID = FormatID(seq, tag)
	}
	return ssehub.NewEvent(m.Channel, m.ID, m.Type, m.Data, m.Retry, seq, at), nil
}
