// Package sse implements the text/event-stream wire format of the WHATWG HTML
// standard (§9.2): an encoder that cannot produce a malformed frame from
// validated fields, and a decoder that follows the spec's parsing rules to the
// letter. The decoder is written from the spec independently of the encoder,
// so tests can use one to check the other.
package sse

import (
	"bytes"
	"strconv"
)

// AppendEvent appends the wire form of one event to dst and returns the
// extended slice. id, typ and retry are written only when set (retry > 0).
// data is split on CR, LF and CRLF, each piece on its own "data:" line, so a
// newline in the payload can never end the event early; empty data still
// writes one "data:" line so the client dispatches an event.
//
// The caller must have checked that id and typ hold no CR, LF or NUL.
func AppendEvent(dst []byte, id, typ string, data []byte, retry int) []byte {
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	if typ != "" {
		dst = append(dst, "event: "...)
		dst = append(dst, typ...)
		dst = append(dst, '\n')
	}
	if retry > 0 {
		dst = append(dst, "retry: "...)
		dst = strconv.AppendInt(dst, int64(retry), 10)
		dst = append(dst, '\n')
	}
	dst = AppendData(dst, data)
	return append(dst, '\n')
}

// AppendData appends data as one or more "data:" lines.
func AppendData(dst, data []byte) []byte {
	for {
		i := bytes.IndexAny(data, "\r\n")
		line := data
		if i >= 0 {
			line = data[:i]
		}
		if len(line) == 0 {
			dst = append(dst, "data:\n"...)
		} else {
			// The space after the colon is always written: the parser strips
			// exactly one, so a payload's own leading space survives.
			dst = append(dst, "data: "...)
			dst = append(dst, line...)
			dst = append(dst, '\n')
		}
		if i < 0 {
			return dst
		}
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// AppendRetry appends a lone "retry:" line, with no blank line after it. A
// parser sets the reconnection time as it reads the line (§9.2.6), so no
// blank line is needed; without one, clients that dispatch an empty event
// at every blank line after a field (httpx-sse, r3labs/sse, tmaxmax/go-sse)
// see nothing, and the line becomes part of the next event's block.
func AppendRetry(dst []byte, ms int) []byte {
	dst = append(dst, "retry: "...)
	dst = strconv.AppendInt(dst, int64(ms), 10)
	return append(dst, '\n')
}

// Heartbeat is a comment line: invisible to a compliant parser, but it keeps
// proxies and idle timers from closing the connection. It has no blank line
// after it, which clients such as httpx-sse and r3labs/sse would turn into
// an empty event once the stream has set an id.
var Heartbeat = []byte(":\n")
