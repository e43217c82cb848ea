package redisbroker

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"time"

	"github.com/ssehub/ssehub"
)

// seqKey is the key that marks an envelope as this broker's own. Its value
// is the event's sequence number. invenio-sse's subscriber ignores it.
const seqKey = "ssehub_seq"

// envelope is the JSON object carried by a Redis pub/sub message and kept
// in a channel's stream. Three flavours share it:
//
//   - ssehub's own: {"data", "event", "retry", "id", "ssehub_seq"}, data
//     compact JSON, event and retry null when unset, id a string;
//   - invenio-sse's: {"data", "event", "id", "retry"}, always all four keys,
//     nulls kept, id a string or a number (by default epoch seconds as a
//     float);
//   - flask-sse's: {"data", "type", "id", "retry"}, keys with a false value
//     left out, and a string data meant to be sent as it is.
//
// The fields stay raw so that nothing passes through a float64.
type envelope struct {
	Data  json.RawMessage `json:"data"`
	Event json.RawMessage `json:"event"`
	Type  json.RawMessage `json:"type"`
	ID    json.RawMessage `json:"id"`
	Retry json.RawMessage `json:"retry"`
	Seq   json.RawMessage `json:"ssehub_seq"`
}

// appendEnvelopeHead appends the start of an own envelope for m, up to and
// including `"id":`. The publish script adds the id and the sequence
// number, which only it knows.
func appendEnvelopeHead(dst []byte, m ssehub.Message) []byte {
	dst = append(dst, `{"data":`...)
	dst = append(dst, m.Data...)
	dst = append(dst, `,"event":`...)
	if m.Type == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendJSONString(dst, m.Type)
	}
	dst = append(dst, `,"retry":`...)
	if m.Retry == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = strconv.AppendInt(dst, int64(m.Retry), 10)
	}
	return append(dst, `,"id":`...)
}

func appendJSONString(dst []byte, s string) []byte {
	b, _ := json.Marshal(s) // a string always marshals
	return append(dst, b...)
}

var errNoData = errors.New("no data key")

// decodeEnvelope turns the payload of a message on channel into an Event.
// Own envelopes keep their sequence number; foreign ones get Seq 0. Fields
// that would break the stream (an id or type with a line break, data that
// is not JSON) make it an error: such a message is dropped, never sent.
func decodeEnvelope(channel string, payload []byte) (*ssehub.Event, error) {
	var env envelope
	if err := json.Unmarshal(payload, &env); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	if env.Data == nil {
		return nil, errNoData
	}
	var (
		seq    uint64
		at     = time.Now()
		typ    = env.Event
		rawStr = false // data is a JSON string to send unquoted (flask-sse)
		err    error
	)
	switch {
	case env.Seq != nil:
		if seq, err = strconv.ParseUint(string(env.Seq), 10, 64); err != nil || seq == 0 {
			return nil, fmt.Errorf("bad %s %s", seqKey, env.Seq)
		}
		at = time.UnixMicro(int64(seq))
	case env.Event == nil:
		// No "event" key: invenio-sse always writes one, so this is flask-sse.
		typ = env.Type
		rawStr = true
	}
	m := ssehub.Message{Channel: channel, Data: env.Data}
	if m.Type, err = textField(typ); err != nil {
		return nil, fmt.Errorf("event type: %w", err)
	}
	if m.ID, err = textField(env.ID); err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	m.Retry = retryField(env.Retry)
	if err := m.Normalize(); err != nil {
		return nil, err
	}
	data := []byte(m.Data)
	if rawStr && len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return nil, fmt.Errorf("data: %w", err)
		}
		data = []byte(s)
	}
	return ssehub.NewEvent(channel, m.ID, m.Type, data, m.Retry, seq, at), nil
}

// textField reads an id or event type the way the Python publishers print
// it: a string as it is, a number exactly as written (an epoch float keeps
// all its digits), and nothing for null, "", 0 or false, which Python
// treats as unset.
func textField(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "", nil
	}
	switch raw[0] {
	case 'n', 'f': // null, false
		return "", nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", err
		}
		return s, nil
	case '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		if isZero(raw) {
			return "", nil
		}
		return string(raw), nil
	}
	return "", fmt.Errorf("%s is not a string or a number", raw)
}

// isZero reports whether the JSON number raw equals zero (0, -0.0, 0e5).
func isZero(raw json.RawMessage) bool {
	f, ok := new(big.Float).SetString(string(raw))
	return ok && f.Sign() == 0
}

// retryField reads a retry: a non-negative integer, or nothing. Anything
// else would be ignored by browsers, so it is left out.
func retryField(raw json.RawMessage) int {
	n, err := strconv.Atoi(string(raw))
	if err != nil || n < 0 {
		return 0
	}
	return n
}
