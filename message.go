package ssehub

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// DefaultChannel is the channel used when a message or subscription names
// none, as in invenio-sse and flask-sse.
const DefaultChannel = "sse"

// Limits on the fields of a message.
const (
	MaxChannelLen = 200
	MaxIDLen      = 256
	MaxTypeLen    = 256
	// MaxIdempotencyKeyLen bounds Message.IdempotencyKey.
	MaxIdempotencyKeyLen = 128
)

// ResetType is the type of the event a subscriber receives when it asked to
// resume from an id the hub no longer knows: its state may be stale and
// should be fetched again. Publishers may not use the "ssehub." prefix.
const ResetType = "ssehub.reset"

// Message is what a publisher sends. Data is any JSON value; it is stored and
// sent in compact form. Type becomes the event's "event:" field, ID its "id:"
// field (assigned by the broker when empty), and Retry, in milliseconds, its
// "retry:" field (not sent when zero). Channel defaults to DefaultChannel.
//
// IdempotencyKey, when set, names this publish: a broker that has already
// published a message with the same key (within its idempotency window)
// returns that event instead of publishing it again, so a publish that
// failed with ErrOutcomeUnknown can be sent again safely. It is 1 to
// MaxIdempotencyKeyLen printable ASCII characters; HTTP publishers send it
// as the Idempotency-Key header.
type Message struct {
	Channel        string          `json:"channel,omitempty"`
	Data           json.RawMessage `json:"data"`
	Type           string          `json:"type,omitempty"`
	ID             string          `json:"id,omitempty"`
	Retry          int             `json:"retry,omitempty"`
	IdempotencyKey string          `json:"-"`
}

// Normalize checks m and brings it to canonical form: the default channel
// when none is set, and Data compacted. Errors wrap the sentinel that names
// the bad field (ErrInvalidChannel, ErrInvalidData, ...).
func (m *Message) Normalize() error {
	if m.Channel == "" {
		m.Channel = DefaultChannel
	}
	if err := ValidChannel(m.Channel); err != nil {
		return err
	}
	if err := validField(m.ID, MaxIDLen, ErrInvalidID); err != nil {
		return err
	}
	if err := validField(m.Type, MaxTypeLen, ErrInvalidType); err != nil {
		return err
	}
	if strings.HasPrefix(m.Type, "ssehub.") {
		return fmt.Errorf("%w: the \"ssehub.\" prefix is reserved", ErrInvalidType)
	}
	if m.Retry < 0 {
		return fmt.Errorf("%w: %d is negative", ErrInvalidRetry, m.Retry)
	}
	if err := ValidIdempotencyKey(m.IdempotencyKey); err != nil {
		return err
	}
	data, err := CompactJSON(m.Data)
	if err != nil {
		return err
	}
	m.Data = data
	return nil
}

// CompactJSON checks that data is one valid UTF-8 JSON value and returns it
// without insignificant white space, so it holds no raw line break.
func CompactJSON(data []byte) (json.RawMessage, error) {
	if len(data) == 0 {
		return nil, fmt.Errorf("%w: data is missing", ErrInvalidData)
	}
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: not valid UTF-8", ErrInvalidData)
	}
	var buf bytes.Buffer
	buf.Grow(len(data))
	if err := json.Compact(&buf, data); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidData, err)
	}
	return buf.Bytes(), nil
}

// ValidChannel reports whether name is a valid channel name: 1 to
// MaxChannelLen characters from A-Z, a-z, 0-9 and "_-.:@/". The set leaves
// out white space, the wildcard characters "*" and ">" used in access
// patterns, and everything that needs escaping in a URL query.
func ValidChannel(name string) error {
	if name == "" || len(name) > MaxChannelLen {
		return fmt.Errorf("%w: %q must be 1 to %d characters", ErrInvalidChannel, name, MaxChannelLen)
	}
	for i := 0; i < len(name); i++ {
		if !channelChar(name[i]) {
			return fmt.Errorf("%w: %q has %q; allowed are A-Z a-z 0-9 _ - . : @ /", ErrInvalidChannel, name, name[i])
		}
	}
	return nil
}

func channelChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("_-.:@/", c) >= 0
}

// ValidIdempotencyKey reports whether key may be used as an idempotency
// key: empty (none), or 1 to MaxIdempotencyKeyLen characters from "!" to
// "~", so that it fits an HTTP header and a log line as it is.
func ValidIdempotencyKey(key string) error {
	if len(key) > MaxIdempotencyKeyLen {
		return fmt.Errorf("%w: longer than %d bytes", ErrInvalidIdempotencyKey, MaxIdempotencyKeyLen)
	}
	for i := 0; i < len(key); i++ {
		if key[i] < '!' || key[i] > '~' {
			return fmt.Errorf("%w: only printable ASCII without spaces is allowed", ErrInvalidIdempotencyKey)
		}
	}
	return nil
}

// ValidID reports whether id may be sent as an event id.
func ValidID(id string) error { return validField(id, MaxIDLen, ErrInvalidID) }

func validField(s string, max int, sentinel error) error {
	if len(s) > max {
		return fmt.Errorf("%w: longer than %d bytes", sentinel, max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: not valid UTF-8", sentinel)
	}
	if strings.ContainsAny(s, "\r\n\x00") {
		return fmt.Errorf("%w: %q holds CR, LF or NUL", sentinel, s)
	}
	return nil
}
