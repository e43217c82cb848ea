package natsbroker

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/ssehub/ssehub"
)

var errNotChannel = errors.New("subject names no valid channel")

// decode turns a message of the events stream into an Event. The body is
// the data, which must be JSON; the headers hold the type, the publisher's
// id and the retry. Anything that would break the stream is an error: such
// a message is skipped, never sent.
func (b *Broker) decode(ids *idCodec, subject string, h nats.Header, data []byte, seq uint64, at time.Time) (*ssehub.Event, error) {
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
		m.ID = ids.event(seq)
	}
	return ssehub.NewEvent(m.Channel, m.ID, m.Type, m.Data, m.Retry, seq, at), nil
}

// ackInfo is what a consumer's message says of itself in its reply
// subject.
type ackInfo struct {
	streamSeq, consumerSeq uint64
	time                   time.Time
}

// parseAck reads the reply subject of a message a consumer delivers:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ns>.<pending>
//
// or, from newer servers, the same with <domain>.<account hash> after
// $JS.ACK. and a token at the end.
func parseAck(reply string) (ackInfo, bool) {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return ackInfo{}, false
	}
	var tok [12]string
	n := 0
	for n < len(tok) {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			tok[n] = rest
			n++
			break
		}
		tok[n], rest = rest[:i], rest[i+1:]
		n++
	}
	// Tokens after $JS.ACK.: 7 in the old form, at least 9 in the new.
	first := 3 // <sseq> in the old form
	switch {
	case n == 7:
	case n >= 9:
		first = 5
	default:
		return ackInfo{}, false
	}
	sseq, err1 := strconv.ParseUint(tok[first], 10, 64)
	dseq, err2 := strconv.ParseUint(tok[first+1], 10, 64)
	ns, err3 := strconv.ParseInt(tok[first+2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return ackInfo{}, false
	}
	return ackInfo{streamSeq: sseq, consumerSeq: dseq, time: time.Unix(0, ns)}, true
}
