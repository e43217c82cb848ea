package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"sync/atomic"
	"time"
)

// readBufSize is the read buffer of one subscriber: large enough to take a
// burst of coalesced frames in one read, small enough for 20,000 of them.
const readBufSize = 8 << 10

// maxLine bounds a line a subscriber keeps across reads; longer lines are
// counted as malformed and dropped.
const maxLine = 1 << 20

// maxSeq bounds the event numbers a subscriber tracks, so that a bogus
// number cannot make it allocate without limit.
const maxSeq = 1 << 24

// Chunked-body decoder states.
const (
	chunkSize = iota // reading the hex size line
	chunkData        // inside chunk data
	chunkCRLF        // after chunk data, up to its line end
	chunkEnd         // after the last chunk
)

// readerKind is how a subscriber reads its stream (Options.Slow and
// Options.Stalled).
type readerKind int

const (
	fast readerKind = iota
	slow
	stalled
)

// stalledReadBuf is the receive buffer of slow and stalled streams, so that
// the kernel does not take in for them what they do not read.
const stalledReadBuf = 4 << 10

// subscriber is one stream. Its counters are written by its reader
// goroutine only, and read after that goroutine has ended.
type subscriber struct {
	r    *runner
	ch   *chanState
	kind readerKind
	conn net.Conn
	buf  []byte
	hist *histShard // nil: no latency recorded

	stallChecked chan struct{} // closed when a stalled stream knows whether it was cut

	chunked  bool
	state    int
	remain   int64
	sizeBad  bool
	sizeExt  bool
	line     []byte
	now      int64 // receive time of the current read, in Unix nanoseconds
	lastRecv atomic.Int64

	seen       []uint64 // bit set of event numbers received
	maxSeq     int64
	received   int64
	dups       int64
	outOfOrder int64
	malformed  int64
	heartbeats int64
	resets     int64
	endedEarly bool
	newlyRecv  int64 // first receipts in the current read, not yet added to runner.delivered
}

func newSubscriber(r *runner, c *chanState, kind readerKind) *subscriber {
	s := &subscriber{r: r, ch: c, kind: kind}
	switch kind {
	case fast:
		s.hist = r.hist.shard()
	case stalled:
		s.stallChecked = make(chan struct{})
	}
	return s
}

// dial connects from src to the stream at rawURL and reads the response
// headers. The stream is open when dial returns nil.
func (s *subscriber) dial(ctx context.Context, src netip.Addr, rawURL string) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	if u.Hostname() == "localhost" {
		host = net.JoinHostPort("127.0.0.1", u.Port())
	}
	conn, err := dialer(src).DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		// Close with a reset: no TIME_WAIT left on the tool's ports, so
		// runs can follow each other without running out of them.
		tc.SetLinger(0)
		if s.kind != fast {
			tc.SetReadBuffer(stalledReadBuf)
		}
	}
	s.conn = conn
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + u.RequestURI() + " HTTP/1.1\r\nHost: " + u.Host +
		"\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		conn.Close()
		return err
	}
	s.buf = make([]byte, readBufSize)
	n := 0
	for {
		if n == len(s.buf) {
			conn.Close()
			return errors.New("response header too large")
		}
		m, err := conn.Read(s.buf[n:])
		n += m
		if i := bytes.Index(s.buf[:n], []byte("\r\n\r\n")); i >= 0 {
			if err := s.header(s.buf[:i]); err != nil {
				conn.Close()
				return err
			}
			conn.SetDeadline(time.Time{})
			s.now = time.Now().UnixNano()
			s.consume(s.buf[i+4 : n])
			return nil
		}
		if err != nil {
			conn.Close()
			return fmt.Errorf("reading response header: %w", err)
		}
	}
}

// header checks the status line and notes the transfer encoding.
func (s *subscriber) header(h []byte) error {
	lines := bytes.Split(h, []byte("\r\n"))
	status := lines[0]
	if !bytes.HasPrefix(status, []byte("HTTP/1.")) || len(status) < 12 {
		return fmt.Errorf("bad status line %q", status)
	}
	if code := string(status[9:12]); code != "200" {
		return fmt.Errorf("status %s", bytes.TrimSpace(status[9:]))
	}
	for _, l := range lines[1:] {
		name, value, ok := bytes.Cut(l, []byte(":"))
		if !ok {
			continue
		}
		if bytes.EqualFold(bytes.TrimSpace(name), []byte("Transfer-Encoding")) &&
			bytes.Contains(bytes.ToLower(value), []byte("chunked")) {
			s.chunked = true
		}
	}
	return nil
}

// read consumes the stream until it ends or the run closes it: at full
// speed, at Options.SlowRate, or, for a stalled stream, not before the run
// is over (checkStalled).
func (s *subscriber) read() {
	defer s.r.readers.Done()
	if s.kind == stalled {
		s.readStalled()
		return
	}
	var (
		start = time.Now()
		total int64
		buf   = s.buf
	)
	if s.kind == slow {
		buf = buf[:min(len(buf), max(s.r.o.SlowRate/10, 1))]
	}
	for {
		n, err := s.conn.Read(buf)
		if n > 0 {
			s.now = time.Now().UnixNano()
			s.consume(buf[:n])
		}
		if err == nil && s.state == chunkEnd {
			err = io.EOF // the body ended: the hub ended the stream
		}
		if err != nil {
			s.endedEarly = !s.r.closing.Load()
			if s.endedEarly {
				s.ch.subs.Add(-1)
				if s.kind == fast {
					s.ch.fast.Add(-1)
				}
				s.ch.signal()
			}
			return
		}
		if s.kind == slow {
			total += int64(n)
			Sleep(context.Background(), time.Until(start.Add(time.Duration(total)*time.Second/time.Duration(s.r.o.SlowRate))))
		}
	}
}

// readStalled waits until the run is over, then reads what the hub sent,
// to find out whether it ended the stream.
func (s *subscriber) readStalled() {
	defer close(s.stallChecked)
	<-s.r.unstall
	for {
		// The hub keeps writing to a stream it has not cut: a pause of a
		// second means it did not.
		s.conn.SetReadDeadline(time.Now().Add(time.Second))
		n, err := s.conn.Read(s.buf)
		if n > 0 && s.chunked {
			s.chunks(s.buf[:n])
		}
		if s.chunked && s.state == chunkEnd || err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			s.endedEarly = true
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *subscriber) close() { s.conn.Close() }

// consume takes bytes of the response body as they arrive.
func (s *subscriber) consume(p []byte) {
	if !s.chunked {
		s.lines(p)
	} else {
		s.chunks(p)
	}
	if s.newlyRecv > 0 {
		s.r.delivered.Add(s.newlyRecv)
		s.newlyRecv = 0
		s.lastRecv.Store(s.now)
	}
}

// chunks decodes a chunked body, passing the data on to lines.
func (s *subscriber) chunks(p []byte) {
	for len(p) > 0 {
		switch s.state {
		case chunkSize:
			i := bytes.IndexByte(p, '\n')
			part := p
			if i >= 0 {
				part = p[:i]
			}
			s.addSizeDigits(part)
			if i < 0 {
				return
			}
			p = p[i+1:]
			s.sizeExt = false
			switch {
			case s.sizeBad:
				s.malformed++
				s.state = chunkEnd
			case s.remain == 0:
				s.state = chunkEnd
			default:
				s.state = chunkData
			}
		case chunkData:
			n := int(min(s.remain, int64(len(p))))
			s.lines(p[:n])
			s.remain -= int64(n)
			p = p[n:]
			if s.remain == 0 {
				s.state = chunkCRLF
			}
		case chunkCRLF:
			i := bytes.IndexByte(p, '\n')
			if i < 0 {
				return
			}
			p = p[i+1:]
			s.state, s.remain, s.sizeBad, s.sizeExt = chunkSize, 0, false, false
		case chunkEnd:
			return
		}
	}
}

// addSizeDigits reads hex digits of a chunk size line, ignoring a chunk
// extension after ';' and the CR.
func (s *subscriber) addSizeDigits(part []byte) {
	if s.sizeExt {
		return
	}
	for _, c := range part {
		var d int64
		switch {
		case '0' <= c && c <= '9':
			d = int64(c - '0')
		case 'a' <= c && c <= 'f':
			d = int64(c-'a') + 10
		case 'A' <= c && c <= 'F':
			d = int64(c-'A') + 10
		case c == ';':
			// A chunk extension follows, up to the line end.
			s.sizeExt = true
			return
		case c == '\r' || c == ' ' || c == '\t':
			continue
		default:
			s.sizeBad = true
			return
		}
		if s.remain > 1<<40 {
			s.sizeBad = true
			return
		}
		s.remain = s.remain<<4 | d
	}
}

// lines splits body bytes into lines ending in LF (a CR before it is
// dropped) and handles each.
func (s *subscriber) lines(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if len(s.line)+len(p) > maxLine {
				s.malformed++
				s.line = s.line[:0]
				return
			}
			s.line = append(s.line, p...)
			return
		}
		line := p[:i]
		if len(s.line) > 0 {
			s.line = append(s.line, line...)
			line = s.line
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		s.handle(line)
		s.line = s.line[:0]
		p = p[i+1:]
	}
}

// handle takes one line of the event stream. Only data lines and comments
// matter: the data carries the event's number and send time.
func (s *subscriber) handle(line []byte) {
	switch {
	case len(line) == 0:
	case line[0] == ':':
		s.heartbeats++
	case bytes.Equal(line, []byte("event: ssehub.reset")):
		s.resets++
	case bytes.HasPrefix(line, []byte("data:")):
		seq, sent, ok := parsePayload(line[5:])
		if !ok {
			return // not one of ours, such as a reset event
		}
		s.record(seq, sent)
	}
}

func (s *subscriber) record(seq, sent int64) {
	if seq < 1 || seq > maxSeq {
		s.malformed++
		return
	}
	w, bit := seq/64, uint64(1)<<(seq%64)
	if int(w) >= len(s.seen) {
		s.seen = append(s.seen, make([]uint64, int(w)+1-len(s.seen)+len(s.seen)/2)...)
	}
	if s.seen[w]&bit != 0 {
		s.dups++
		return
	}
	s.seen[w] |= bit
	s.received++
	s.newlyRecv++
	if seq < s.maxSeq {
		s.outOfOrder++
	} else {
		s.maxSeq = seq
	}
	if s.hist != nil {
		s.hist.add(s.now - sent)
	}
	if s.kind == fast {
		s.ch.ack(seq)
	}
}

// payload builds the data of event seq sent at time sent, padded to about
// size bytes. parsePayload reads it back.
func payload(dst []byte, seq, sent int64, size int) []byte {
	dst = append(dst, `{"s":`...)
	dst = strconv.AppendInt(dst, seq, 10)
	dst = append(dst, `,"t":`...)
	dst = strconv.AppendInt(dst, sent, 10)
	if pad := size - len(dst) - 8; pad > 0 {
		dst = append(dst, `,"p":"`...)
		for range pad {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// parsePayload finds the "s" and "t" numbers in a data line, wherever the
// server put them in its own envelope.
func parsePayload(b []byte) (seq, sent int64, ok bool) {
	// The payload as this tool sends it, " {"s":N,"t":N...", read without
	// a search: the tool must cost less per event than the hub it loads.
	if p, found := bytes.CutPrefix(b, []byte(` {"s":`)); found {
		seq, n := leadingNumber(p)
		if rest, found := bytes.CutPrefix(p[n:], []byte(`,"t":`)); n > 0 && found {
			if sent, m := leadingNumber(rest); m > 0 {
				return seq, sent, true
			}
		}
	}
	seq, ok1 := numberAfter(b, []byte(`"s":`))
	sent, ok2 := numberAfter(b, []byte(`"t":`))
	return seq, sent, ok1 && ok2
}

// leadingNumber reads the decimal number at the start of b, of up to 19
// digits, and returns it with the count of its digits.
func leadingNumber(b []byte) (n int64, digits int) {
	for _, c := range b {
		if c < '0' || c > '9' || digits == 19 {
			break
		}
		n = n*10 + int64(c-'0')
		digits++
	}
	return n, digits
}

func numberAfter(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	b = b[i+len(key):]
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	n, digits := leadingNumber(b)
	return n, digits > 0
}
