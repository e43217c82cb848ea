package redisbroker

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
// This struct reads own envelopes; the fields stay raw so that nothing
// passes through a float64. The other two are read as Python reads them
// (decodeLegacy).
type envelope struct {
	Data  json.RawMessage `json:"data"`
	Event json.RawMessage `json:"event"`
	Type  json.RawMessage `json:"type"`
	ID    json.RawMessage `json:"id"`
	Retry json.RawMessage `json:"retry"`
	Seq   json.RawMessage `json:"ssehub_seq"`
	// Foreign holds, as a JSON string, the message of another publisher
	// that a hub took into the history (see foreign.go). The envelope then
	// has only this, the id and the seq.
	Foreign *string `json:"foreign"`
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

var (
	errNoData = errors.New("no data key")
	// errNoEvent marks a valid message that a browser would not see as an
	// event (flask-sse's empty string): it is not streamed.
	errNoEvent = errors.New("no event to send")
)

// ownMark is in every own envelope and in no message of the Python
// publishers.
var ownMark = []byte(`"` + seqKey + `"`)

// decodeEnvelope turns the payload of a message on channel into an Event.
// Own envelopes keep their sequence number; foreign ones get Seq 0 and are
// rendered as the view of the library that publishes them would stream
// them (see decodeLegacy). Fields that would break the stream (an id or
// type with a line break, data that is not JSON) make it an error: such a
// message is dropped, never sent.
func decodeEnvelope(channel string, payload []byte) (*ssehub.Event, error) {
	if e, ok := decodeOwnFast(channel, payload); ok {
		return e, nil
	}
	if bytes.Contains(payload, ownMark) {
		// The mark may also be in another publisher's data.
		if e, err := decodeOwn(channel, payload); !errors.Is(err, errNotOwn) {
			return e, err
		}
	}
	return decodeLegacy(channel, payload)
}

var errNotOwn = errors.New("not an own envelope")

func decodeOwn(channel string, payload []byte) (*ssehub.Event, error) {
	var env envelope
	if err := json.Unmarshal(payload, &env); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object: %w", errNotOwn, err)
	}
	if env.Seq == nil {
		return nil, fmt.Errorf("%w: no %s", errNotOwn, seqKey)
	}
	seq, err := strconv.ParseUint(string(env.Seq), 10, 64)
	if err != nil || seq == 0 {
		return nil, fmt.Errorf("bad %s %s", seqKey, env.Seq)
	}
	if env.Foreign != nil {
		// Rendered as its publisher's view renders it, with the id the hub
		// gave it when it had none.
		e, err := decodeLegacy(channel, []byte(*env.Foreign))
		if err != nil {
			return nil, err
		}
		id, err := ownText(env.ID)
		if err != nil || ssehub.ValidID(id) != nil {
			return nil, fmt.Errorf("id %s", env.ID)
		}
		return ssehub.NewEvent(channel, id, e.Type, e.Data, e.Retry, seq, time.UnixMicro(int64(seq))), nil
	}
	if env.Data == nil {
		return nil, errNoData
	}
	m := ssehub.Message{Channel: channel, Data: env.Data, Retry: retryField(env.Retry)}
	if m.Type, err = ownText(env.Event); err != nil {
		return nil, fmt.Errorf("event type: %w", err)
	}
	if m.ID, err = ownText(env.ID); err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	if err := m.Normalize(); err != nil {
		return nil, err
	}
	return ssehub.NewEvent(channel, m.ID, m.Type, m.Data, m.Retry, seq, time.UnixMicro(int64(seq))), nil
}

// decodeOwnFast reads an own envelope exactly as appendEnvelopeHead and
// the publish script write it, {"data":…,"event":…,"retry":…,"id":"…",
// "ssehub_seq":…}, with event and id strings holding no escape: most
// envelopes, which every hub decodes. It reads the fields after data from
// the end, so that the data is scanned once, by Normalize. It reports
// false for anything else, which decodeOwn then reads; when it reports
// true, the payload is a JSON object with exactly these keys, once each,
// and the event is the one decodeOwn would return.
func decodeOwnFast(channel string, payload []byte) (*ssehub.Event, bool) {
	rest, ok := bytes.CutPrefix(payload, []byte(`{"data":`))
	if !ok {
		return nil, false
	}
	// "ssehub_seq":N}
	rest, ok = bytes.CutSuffix(rest, []byte("}"))
	i := len(rest)
	for i > 0 && rest[i-1] >= '0' && rest[i-1] <= '9' {
		i--
	}
	if !ok || i == len(rest) || i < len(rest)-20 || rest[i] == '0' {
		return nil, false
	}
	seq, err := strconv.ParseUint(string(rest[i:]), 10, 64)
	if err != nil {
		return nil, false
	}
	if rest, ok = bytes.CutSuffix(rest[:i], []byte(`,"ssehub_seq":`)); !ok {
		return nil, false
	}
	// "id":"…"
	id, rest, ok := cutPlainString(rest)
	if !ok || id == "" {
		return nil, false
	}
	if rest, ok = bytes.CutSuffix(rest, []byte(`,"id":`)); !ok {
		return nil, false
	}
	// "retry":null or a positive integer without leading zero
	retry := 0
	if r, ok := bytes.CutSuffix(rest, []byte("null")); ok {
		rest = r
	} else {
		i := len(rest)
		for i > 0 && rest[i-1] >= '0' && rest[i-1] <= '9' {
			i--
		}
		if i == len(rest) || i < len(rest)-9 || rest[i] == '0' {
			return nil, false
		}
		retry, _ = strconv.Atoi(string(rest[i:]))
		rest = rest[:i]
	}
	if rest, ok = bytes.CutSuffix(rest, []byte(`,"retry":`)); !ok {
		return nil, false
	}
	// "event":null or "…"
	typ := ""
	if r, ok := bytes.CutSuffix(rest, []byte("null")); ok {
		rest = r
	} else if typ, rest, ok = cutPlainString(rest); !ok || typ == "" {
		return nil, false
	}
	data, ok := bytes.CutSuffix(rest, []byte(`,"event":`))
	if !ok {
		return nil, false
	}
	// The data must be one JSON value, or the keys above may not be what
	// they seem (a data `1,"event":2` makes a valid object with two event
	// keys): Normalize checks it.
	m := ssehub.Message{Channel: channel, Data: data, Type: typ, ID: id, Retry: retry}
	if err := m.Normalize(); err != nil {
		return nil, false
	}
	return ssehub.NewEvent(channel, m.ID, m.Type, m.Data, m.Retry, seq, time.UnixMicro(int64(seq))), true
}

// cutPlainString cuts a JSON string off the end of b when it holds no
// escape, no control character and only valid UTF-8, so that its text is
// what is between its quotes; it returns that text and what is before it.
func cutPlainString(b []byte) (string, []byte, bool) {
	if len(b) < 2 || b[len(b)-1] != '"' {
		return "", nil, false
	}
	open := bytes.LastIndexByte(b[:len(b)-1], '"')
	if open < 0 {
		return "", nil, false
	}
	text := b[open+1 : len(b)-1]
	for _, c := range text {
		if c < 0x20 || c == '\\' {
			return "", nil, false
		}
	}
	if !utf8.Valid(text) {
		return "", nil, false
	}
	return string(text), b[:open], true
}

// appendForeignHead appends the start of the envelope of a foreign
// message taken into the history, up to and including `"id":`.
func appendForeignHead(dst, payload []byte) []byte {
	dst = append(dst, `{"foreign":`...)
	dst = appendJSONString(dst, string(payload))
	return append(dst, `,"id":`...)
}

// appendFlaskHead and appendFlaskTail write the message flask-sse's
// publish() would put on Redis for m, around its id: {"data", "id",
// "retry", "type"}, keys sorted, false values left out. flask-sse's reader
// builds Message(**message) from it, which takes no other key.
func appendFlaskHead(dst []byte, m ssehub.Message) []byte {
	dst = append(dst, `{"data": `...)
	dst = append(dst, m.Data...)
	return append(dst, `, "id": `...)
}

func appendFlaskTail(dst []byte, m ssehub.Message) []byte {
	if m.Retry > 0 {
		dst = append(dst, `, "retry": `...)
		dst = strconv.AppendInt(dst, int64(m.Retry), 10)
	}
	if m.Type != "" {
		dst = append(dst, `, "type": `...)
		dst = appendJSONString(dst, m.Type)
	}
	return append(dst, '}')
}

// ownText reads the event or id of an own envelope: a string, or null.
func ownText(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// retryField reads the retry of an own envelope: a positive integer, or
// nothing.
func retryField(raw json.RawMessage) int {
	n, err := strconv.Atoi(string(raw))
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// decodeLegacy reads a message of invenio-sse or flask-sse as json.loads
// does and renders it as their views do, so that a browser sees through
// ssehub what it would see through them:
//
//   - invenio-sse (the message has an "event" key) writes "data: " and
//     json.dumps(data): one line, Python's separators, every non-ASCII
//     character escaped, floats as Python prints them;
//   - flask-sse (no "event" key) writes a string as it is and anything else
//     as json.dumps(data, sort_keys=True), split with str.splitlines(),
//     each line after "data:" with no space, so the browser drops one
//     leading space of each; nothing at all for an empty string;
//   - both write "event:", "id:" and "retry:" with str(value) and no space,
//     and only when the value is true in Python: so 0, "", false and null
//     set nothing, True is "True", a list is its repr, and a browser
//     keeps a retry made only of digits, also from the string "6000".
//
// The result carries the fields as the browser's parser reads them, and
// ssehub's encoder writes them so that it reads them the same. Where the
// libraries would break the stream (a line break in an id, type or retry)
// or fail (not JSON, no data, a lone surrogate to write), the message is
// an error and is dropped. Two effects ssehub cannot send are left out: an
// id that reads as empty (an id of " "), which would clear the browser's
// last event id, and flask-sse's id on an empty string, which sets it
// without an event.
func decodeLegacy(channel string, payload []byte) (*ssehub.Event, error) {
	v, err := pyLoads(payload)
	if err != nil {
		return nil, err
	}
	if v.kind != pyDict {
		return nil, errors.New("not a JSON object")
	}
	data, ok := v.get("data")
	if !ok {
		return nil, errNoData
	}
	_, invenio := v.get("event")
	typeKey := "type"
	if invenio {
		typeKey = "event"
	}
	m := ssehub.Message{Channel: channel, Data: json.RawMessage("0")}
	if m.Type, err = legacyField(v, typeKey); err != nil {
		return nil, fmt.Errorf("event type: %w", err)
	}
	if m.ID, err = legacyField(v, "id"); err != nil {
		return nil, fmt.Errorf("id: %w", err)
	}
	if strings.IndexByte(m.ID, 0) >= 0 {
		m.ID = "" // a browser ignores an id field that holds NUL
	}
	retry, err := legacyField(v, "retry")
	if err != nil {
		return nil, fmt.Errorf("retry: %w", err)
	}
	if n, err := strconv.Atoi(retry); err == nil && n > 0 && strings.Trim(retry, "0123456789") == "" {
		m.Retry = n
	}
	if err := m.Normalize(); err != nil {
		return nil, err
	}
	var text []byte
	switch {
	case invenio:
		text = appendDumps(nil, data, false)
	case data.kind == pyStr:
		if data.hasSurrogate() {
			return nil, errors.New("data: a lone surrogate")
		}
		lines := pySplitLines(data.s)
		if len(lines) == 0 {
			return nil, errNoEvent
		}
		for i, line := range lines {
			if i > 0 {
				text = append(text, '\n')
			}
			if len(line) > 0 && line[0] == ' ' {
				line = line[1:]
			}
			for _, r := range line {
				text = utf8.AppendRune(text, r)
			}
		}
	default:
		// json.dumps output is printable ASCII: one line.
		text = appendDumps(nil, data, true)
	}
	return ssehub.NewEvent(channel, m.ID, m.Type, text, m.Retry, 0, time.Now()), nil
}

// legacyField returns what a browser reads from the line "key:" + str(value)
// that the libraries write when the value is true in Python: the text with
// one leading space removed. An absent or false value gives "".
func legacyField(v pyValue, key string) (string, error) {
	f, ok := v.get(key)
	if !ok || !f.truthy() {
		return "", nil
	}
	if f.hasSurrogate() {
		return "", errors.New("a lone surrogate")
	}
	text := string(appendStr(nil, f))
	if strings.ContainsAny(text, "\r\n") {
		return "", fmt.Errorf("%q holds a line break", text)
	}
	return strings.TrimPrefix(text, " "), nil
}
