package ssehub

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Detached streams (Config.Detach).
//
// net/http gives every HTTP/1.x stream a goroutine (the handler's, its
// stack grown to about 8 KB by the time it writes), a goroutine that
// watches for the client going away, a 4 KB read buffer, a 4 KB write
// buffer and a 2 KB chunking buffer: over 20 KB that an idle stream holds
// for nothing. A detached stream sends its response headers and first
// batch through net/http, then takes the connection over
// (http.ResponseController's Hijack) and lets the handler return. What
// stays is the connection, the Subscription (a cursor per channel) and a
// small struct.
//
// Events wake the stream: a subscription that waits for events calls its
// wake function when one arrives, which queues the stream for a small pool
// of writer goroutines (at most GOMAXPROCS, started on demand, gone when
// there is nothing to write). A writer composes the stream's next batch
// (stream.go: everything between its cursors and the feeds' heads, up to
// maxBatchBytes) into one chunk of the chunked body, or as is for an
// HTTP/1.0 client, and writes it with one non-blocking write, so a burst of
// events costs one system call per stream instead of one per event. When
// the socket cannot take the whole batch, a goroutine of its own finishes
// the write, bounded by WriteTimeout, and the stream then goes back to the
// pool: only a stream with a slow reader holds a goroutine, and what it has
// yet to send stays references into the shared frames, never a copy.
//
// Nothing reads from a detached connection. On Linux one goroutine per hub
// waits on an epoll instance that holds every detached connection
// (peerWatch), so a client's end of input ends its stream at once, as
// net/http's own read does for a stream in its handler. Elsewhere, and for
// a client that vanished without closing, the next write finds it gone: an
// event or a heartbeat. Heartbeats come from one ticker per hub, which
// ticks twice per Heartbeat interval and sends one to each stream that
// wrote nothing since the previous tick: no stream goes longer than the
// interval without a write, and a busy stream gets none.

// chunkRoom is the room left at the start of a write buffer for the chunk
// size line: up to 8 hex digits and CRLF.
const chunkRoom = 10

// lastChunk ends a chunked body.
var lastChunk = []byte("0\r\n\r\n")

// detacher serves the hub's detached streams. Its zero value is ready.
type detacher struct {
	regMu   sync.Mutex
	streams map[*detached]struct{}
	ticking bool // the ticker goroutine runs

	mu      sync.Mutex
	queue   []*detached // streams waiting for a writer, first at head
	head    int
	workers int
	spare   []*scratch
	late    atomic.Pointer[chan struct{}] // while the writers run late: closed when they catch up; changed under mu

	peers peerWatch
}

// Publishers keep pace with the writers. Fan-out costs a write per stream,
// publishing an event far less, so a publisher that goes flat out can hand
// the writers more than they get through. Events then wait in the writers'
// queue, and every stream of a busy channel falls further behind, to the
// end of the channel's feed, where it must resume from history or with a
// reset. The writers run late when a stream they take has waited in their
// queue more than paceAfter and is more than half its feed behind, or has
// waited more than maxDelay; a publish then waits, once its event is out,
// until the writers catch up (they take a stream that waited less than
// half that), or for maxPace at most. The publisher slows down; its events
// do not wait longer. Spread over many channels, streams fall little behind
// while events wait up to maxDelay, time in which each stream's events
// gather into one write. A stream whose client reads slowly waits for its
// socket outside the queue: clients never slow publishers.
const (
	paceAfter = 20 * time.Millisecond
	maxDelay  = 50 * time.Millisecond
	maxPace   = 100 * time.Millisecond
)

// clockStart is the origin of clock.
var clockStart = time.Now()

// clock reads a monotonic clock, in nanoseconds.
func clock() int64 { return int64(time.Since(clockStart)) }

// pace waits, while the writers run late, until they have caught up, for
// maxPace at most, or until ctx ends.
func (d *detacher) pace(ctx context.Context) {
	late := d.late.Load()
	if late == nil {
		return
	}
	t := time.NewTimer(maxPace)
	defer t.Stop()
	select {
	case <-*late:
	case <-t.C:
	case <-ctx.Done():
	}
}

// taken notes, for a stream a writer took from the queue after it waited
// there waited nanoseconds, whether its first batch lags: whether the
// writers run late.
func (d *detacher) taken(waited int64, lagging bool) {
	var late bool
	switch {
	case waited > int64(maxDelay) || waited > int64(paceAfter) && lagging:
		late = true
	case waited < int64(paceAfter/2) || !lagging && waited < int64(maxDelay/2):
		late = false
	default:
		return
	}
	if late == (d.late.Load() != nil) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch c := d.late.Load(); {
	case late && c == nil:
		c := make(chan struct{})
		d.late.Store(&c)
	case !late && c != nil:
		close(*c)
		d.late.Store(nil)
	}
}

// scratch is what a writer works with: the batch it composes and the bytes
// it writes.
type scratch struct {
	b   batch
	buf []byte
}

// detached is one stream taken over from net/http.
type detached struct {
	stream
	conn    net.Conn
	nb      nbWriter
	nbOK    bool // nb works; otherwise every write goes through writeRest
	chunked bool // the body is chunked (HTTP/1.1); identity, ended by closing, for HTTP/1.0

	// pending counts wake-ups not yet handled. The one who raises it from
	// zero queues the stream; whoever runs the stream lowers it by what it
	// has handled, and gives the stream up when it reaches zero. So the
	// stream runs in one goroutine at a time.
	pending   atomic.Int32
	heartbeat atomic.Bool // a heartbeat is due
	wrote     atomic.Bool // a write happened since the last heartbeat tick
	blocked   atomic.Bool // writeRest is waiting for the client
	readable  atomic.Bool // the client sent something, perhaps its end (peerWatch)

	// Owned by the goroutine running the stream.
	ended    bool        // the connection is closed and the subscription released
	queuedAt int64       // when it was queued for a writer (clock); -1 once a writer took it
	rest     net.Buffers // what a blocked write has yet to send
	after    streamAct   // what follows the blocked write
	restN    int         // events in the blocked write, for the counts
	// live events in the blocked write, for Metrics
	restLive []*Event

	watchFD int32       // the fd peerWatch knows the connection by, or -1
	release func()      // gives back the connection slot
	expiry  *time.Timer // ends the stream when its credential expires; may be nil
}

// detach takes st over from w once its headers and first batch are out,
// and reports whether it did. act is what follows that batch. The stream
// runs in ctx and holds its connection slot until it calls release. detach
// changes nothing when the connection cannot be taken over (HTTP/2, TLS, or
// a ResponseWriter without Hijack): the caller then serves the stream
// itself.
func (h *Hub) detach(ctx context.Context, w http.ResponseWriter, r *http.Request, st *stream, act streamAct, release func()) bool {
	if r.ProtoMajor != 1 || r.TLS != nil || !hijacker(w) {
		return false
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// net/http chose the chunked encoding for HTTP/1.1; an HTTP/1.0 body
	// is the bytes themselves, ended by closing the connection.
	d := &detached{stream: *st, conn: conn, chunked: r.ProtoAtLeast(1, 1), watchFD: -1, release: release}
	sub := d.sub
	if sc, ok := conn.(syscall.Conn); ok && canWriteNonblocking {
		if raw, err := sc.SyscallConn(); err == nil {
			d.nb.init(raw)
			d.nbOK = true
		}
	}
	// The request's context ends when the handler returns; from now on
	// the stream ends by itself.
	if sub.stopCtx != nil {
		sub.stopCtx()
		sub.stopCtx = nil // and with it the request and its context
	}
	if deadline, ok := ctx.Deadline(); ok {
		// ctx ends with the handler. What its deadline stands for is the
		// expiry of the credential the stream was opened with
		// (admitStream), which ends a stream in the handler as well.
		d.expiry = time.AfterFunc(time.Until(deadline), func() { sub.end(errCredentialExpired) })
	}
	d.after = act
	h.web.detacher.peers.watch(d)
	// From here on the stream may run, in a writer: what arrives from
	// now on wakes it; what came or happened before, this does.
	sub.setWake(d.wake)
	h.web.detacher.register(h, d)
	d.wake()
	return true
}

// hijacker reports whether w, or a ResponseWriter it wraps (Unwrap, as
// http.ResponseController follows), can be hijacked.
func hijacker(w http.ResponseWriter) bool {
	for {
		switch t := w.(type) {
		case http.Hijacker:
			return true
		case interface{ Unwrap() http.ResponseWriter }:
			w = t.Unwrap()
		default:
			return false
		}
	}
}

func (d *detacher) register(h *Hub, st *detached) {
	d.regMu.Lock()
	if d.streams == nil {
		d.streams = map[*detached]struct{}{}
	}
	d.streams[st] = struct{}{}
	start := !d.ticking
	d.ticking = true
	d.regMu.Unlock()
	if start {
		go d.tick(h)
	}
	select {
	case <-h.done:
		// The ticker may have woken the others already.
		st.wake()
	default:
	}
}

func (d *detacher) unregister(st *detached) {
	d.regMu.Lock()
	delete(d.streams, st)
	d.regMu.Unlock()
}

// tick sends heartbeats and, when the hub closes, wakes every stream so it
// ends. It returns once no stream is left, or after the hub has closed.
func (d *detacher) tick(h *Hub) {
	var c <-chan time.Time
	if h.cfg.Heartbeat > 0 {
		t := time.NewTicker(h.cfg.Heartbeat / 2)
		defer t.Stop()
		c = t.C
	}
	for {
		select {
		case <-h.done:
			d.regMu.Lock()
			d.ticking = false
			for st := range d.streams {
				st.wake()
			}
			d.regMu.Unlock()
			return
		case <-c:
			d.regMu.Lock()
			if len(d.streams) == 0 {
				d.ticking = false
				d.regMu.Unlock()
				return
			}
			for st := range d.streams {
				if !st.wrote.Swap(false) {
					st.heartbeat.Store(true)
					st.wake()
				}
			}
			d.regMu.Unlock()
		}
	}
}

// wake makes sure that the stream runs after this call.
func (st *detached) wake() {
	if st.pending.Add(1) == 1 {
		st.hub.web.detacher.push(st)
		return
	}
	if st.blocked.Load() {
		select {
		case <-st.sub.ended:
			// A write waits for a client that stopped reading, and the
			// subscription has ended: cut the write short. A drained
			// stream is still to get what was published.
			if st.sub.err != errDraining {
				st.conn.Close()
			}
		default:
		}
	}
}

// peerActive tells st that its client sent something or went away.
func (st *detached) peerActive() {
	st.readable.Store(true)
	st.wake()
}

// push queues st for a writer, starting one if fewer than GOMAXPROCS run.
func (d *detacher) push(st *detached) {
	st.queuedAt = clock()
	d.mu.Lock()
	d.queue = append(d.queue, st)
	start := d.workers < runtime.GOMAXPROCS(0)
	if start {
		d.workers++
	}
	d.mu.Unlock()
	if start {
		go d.work()
	}
}

// work runs queued streams until the queue is empty.
func (d *detacher) work() {
	sc := d.scratch()
	defer d.release(sc)
	for {
		d.mu.Lock()
		if d.head == len(d.queue) {
			d.queue, d.head = d.queue[:0], 0
			d.workers--
			d.mu.Unlock()
			return
		}
		st := d.queue[d.head]
		d.queue[d.head] = nil
		d.head++
		if d.head >= 1024 && 2*d.head >= len(d.queue) {
			// Under steady load the queue may never empty: reuse the
			// consumed front rather than grow forever.
			n := copy(d.queue, d.queue[d.head:])
			clear(d.queue[n:])
			d.queue, d.head = d.queue[:n], 0
		}
		d.mu.Unlock()
		st.run(sc)
	}
}

func (d *detacher) scratch() *scratch {
	d.mu.Lock()
	defer d.mu.Unlock()
	if n := len(d.spare); n > 0 {
		sc := d.spare[n-1]
		d.spare = d.spare[:n-1]
		return sc
	}
	return &scratch{buf: make([]byte, 0, maxBatchBytes+4<<10)}
}

func (d *detacher) release(sc *scratch) {
	sc.b.reset()
	if cap(sc.buf) > 4*maxBatchBytes {
		return // grown by a large event; let it go
	}
	d.mu.Lock()
	if len(d.spare) < 2*runtime.GOMAXPROCS(0) {
		d.spare = append(d.spare, sc)
	}
	d.mu.Unlock()
}

// run handles the stream's wake-ups until none is left, or until the
// stream is handed to a goroutine of its own (step).
func (st *detached) run(sc *scratch) {
	for {
		n := st.pending.Load()
		if !st.ended && st.step(sc) {
			return
		}
		if st.pending.Add(-n) == 0 {
			return
		}
	}
}

// step writes what the stream has to send, batch after batch, until it
// has to wait. It reports whether it handed the stream to a goroutine of
// its own: to finish a write that blocked (writeRest), or to resume a
// subscription that fell behind (resumeBehind).
func (st *detached) step(sc *scratch) (handedOff bool) {
	if st.readable.Swap(false) && st.nb.peerClosed() {
		st.end("client gone")
		return false
	}
	waited := int64(-1) // in the writers' queue, when a writer took it from there
	if st.queuedAt >= 0 {
		waited, st.queuedAt = clock()-st.queuedAt, -1
	}
	act := st.after
	for {
		switch act {
		case actResume:
			go st.resumeBehind()
			return true
		case actEnd:
			st.end(st.reason)
			return false
		}
		b := &sc.b
		act = st.compose(b, st.heartbeat.Swap(false))
		st.after = actWait
		if waited >= 0 && len(b.frames) > 0 {
			st.hub.web.detacher.taken(waited, b.lagging)
			waited = -1
		}
		if b.empty() && act != actEnd {
			if act == actWait {
				return false
			}
			continue
		}
		var (
			blocked bool
			err     error
		)
		if len(b.frames) == 1 && b.frames[0].frameLen() > maxBatchBytes {
			// A large event goes out from its own memory.
			blocked, err = st.writeLarge(sc, b, act == actEnd)
		} else {
			p, prefix := st.encode(sc, act == actEnd)
			if len(p) == 0 {
				continue // the end of an HTTP/1.0 body: nothing to write
			}
			blocked, err = st.write(p, prefix, b)
		}
		if err != nil {
			st.end(st.writeFailed(err))
			return false
		}
		if blocked {
			st.after = act
			return true
		}
		st.written(b)
		if act == actWait {
			return false
		}
	}
}

// encode puts the batch b into the bytes to write, in sc.buf: one chunk of
// a chunked body, or the bytes as they are for an HTTP/1.0 client; after
// the stream's last batch, the end of a chunked body. It returns them and
// the length of the framing before the batch's bytes.
func (st *detached) encode(sc *scratch, last bool) (p []byte, prefix int) {
	b := &sc.b
	buf := sc.buf[:0]
	if st.chunked {
		buf = buf[:chunkRoom]
	}
	buf = append(buf, b.head...)
	for _, e := range b.frames {
		buf = append(buf, e.idLine...)
		buf = append(buf, e.frame...)
	}
	buf = append(buf, b.tail...)
	sc.buf = buf
	if !st.chunked {
		return buf, 0
	}
	p, prefix = buf[chunkRoom:chunkRoom], 0
	if len(buf) > chunkRoom {
		p = frameChunk(buf)
		prefix = len(p) - (len(buf) - chunkRoom) - 2
	}
	if last {
		p = append(p, lastChunk...)
	}
	return p, prefix
}

// frameChunk turns b, which holds chunkRoom spare bytes and then the data,
// into one chunk of a chunked body and returns it.
func frameChunk(b []byte) []byte {
	var size [8]byte
	hex := strconv.AppendUint(size[:0], uint64(len(b)-chunkRoom), 16)
	start := chunkRoom - len(hex) - 2
	copy(b[start:], hex)
	b[chunkRoom-2], b[chunkRoom-1] = '\r', '\n'
	return append(b[start:], '\r', '\n')
}

// write sends p, the encoding of b whose framing before b's bytes is
// prefix bytes long, without waiting. When the socket takes only part of
// it, the rest goes to writeRest in a goroutine of its own, and write
// reports blocked: the stream then belongs to that goroutine.
func (st *detached) write(p []byte, prefix int, b *batch) (blocked bool, err error) {
	n := 0
	if st.nbOK {
		if n, err = st.nb.write(p); err != nil {
			return false, err
		}
	}
	st.wrote.Store(true)
	if n == len(p) {
		return false, nil
	}
	st.rest = unsent(p, prefix, b, n)
	st.restN = b.events
	if st.hub.metrics != nil {
		st.restLive = append(st.restLive[:0], b.live()...)
	}
	st.blocked.Store(true)
	go st.writeRest()
	return true, nil
}

// writeLarge is write for a batch of one event larger than a batch may
// be, which it sends as it is rather than copy it: the chunk size line
// from sc.buf, the event's id line when it has one of its own, the frame,
// then the chunk's end, each with one non-blocking write. What the socket
// does not take goes to writeRest, the event's pieces as references.
func (st *detached) writeLarge(sc *scratch, b *batch, last bool) (blocked bool, err error) {
	e := b.frames[0]
	pieces := [4][]byte{nil, e.idLine, e.frame, nil}
	if st.chunked {
		sc.buf = strconv.AppendUint(sc.buf[:0], uint64(e.frameLen()), 16)
		sc.buf = append(sc.buf, "\r\n"...)
		end := len(sc.buf)
		sc.buf = append(sc.buf, "\r\n"...)
		if last {
			sc.buf = append(sc.buf, lastChunk...)
		}
		pieces[0], pieces[3] = sc.buf[:end], sc.buf[end:]
	}
	for i, p := range pieces {
		n := 0
		if st.nbOK && len(p) > 0 {
			if n, err = st.nb.write(p); err != nil {
				return false, err
			}
		}
		st.wrote.Store(true)
		if n == len(p) {
			continue
		}
		// The framing is sc's: copied. The event's pieces are shared.
		st.rest = st.rest[:0]
		for j, q := range pieces[i:] {
			if j == 0 {
				q = q[n:]
			}
			if len(q) == 0 {
				continue
			}
			if k := i + j; k == 0 || k == len(pieces)-1 {
				q = bytes.Clone(q)
			}
			st.rest = append(st.rest, q)
		}
		st.restN = b.events
		if st.hub.metrics != nil {
			st.restLive = append(st.restLive[:0], b.live()...)
		}
		st.blocked.Store(true)
		go st.writeRest()
		return true, nil
	}
	return false, nil
}

// unsent returns what is left of p, the encoding of b with prefix bytes of
// framing before b's bytes, once its first n bytes are written. The frames
// and other shared bytes in it are referenced, not copied: a stream whose
// client reads slowly holds on to events of the feeds, not to copies of
// them. Only the framing, and the tail when it is b's own, are copied.
func unsent(p []byte, prefix int, b *batch, n int) net.Buffers {
	var rest net.Buffers
	off := 0 // position in p of the piece at hand
	piece := func(q []byte, shared bool) {
		start := off
		off += len(q)
		if off <= n {
			return // written
		}
		q = q[max(n-start, 0):]
		if !shared {
			q = bytes.Clone(q)
		}
		rest = append(rest, q)
	}
	piece(p[:prefix], false)
	piece(b.head, true)
	for _, e := range b.frames {
		piece(e.idLine, true)
		piece(e.frame, true)
	}
	piece(b.tail, !b.tailOwned)
	piece(p[off:], false) // the chunk's CRLF and the last chunk
	return rest
}

// writeRest finishes a write that blocked, within WriteTimeout, then runs
// the stream until it has nothing left to do.
func (st *detached) writeRest() {
	timeout := st.hub.cfg.WriteTimeout
	var err error
	if timeout > 0 {
		err = st.conn.SetWriteDeadline(time.Now().Add(timeout))
	}
	if err == nil {
		_, err = st.rest.WriteTo(st.conn)
	}
	st.blocked.Store(false)
	if err == nil && timeout > 0 {
		// Non-blocking writes fail at once once a deadline has passed.
		err = st.conn.SetWriteDeadline(time.Time{})
	}
	st.rest = nil
	if err == nil {
		st.events += int64(st.restN)
		if m := st.hub.metrics; m != nil && st.restN > 0 {
			m.EventsWritten(st.restN)
			now := time.Now()
			for _, e := range st.restLive {
				m.WriteLatency(now.Sub(e.Time))
			}
		}
	}
	clear(st.restLive)
	st.restLive = st.restLive[:0]
	if err != nil {
		reason := st.writeFailed(err)
		if st.sub.endErr() != nil {
			reason = st.sub.endReason() // wake cut the write short
		}
		st.end(reason)
	}
	st.continueAlone()
}

// resumeBehind resumes a subscription that fell behind its feeds: the
// broker's replay may take a while, so it runs in a goroutine of its own,
// then the stream goes on.
func (st *detached) resumeBehind() {
	ctx, cancel := context.WithTimeout(context.Background(), subscribeTimeout)
	err := st.sub.resume(ctx)
	cancel()
	st.after = actWait
	if err != nil {
		st.end("resume: " + err.Error())
	}
	st.continueAlone()
}

// continueAlone runs a stream that a goroutine of its own took over until
// it has nothing left to do.
func (st *detached) continueAlone() {
	d := &st.hub.web.detacher
	sc := d.scratch()
	st.run(sc)
	d.release(sc)
}

// end closes the stream, logs its end, and gives back its connection slot
// and subscription. The log record comes first: once the last subscription
// is released, Close returns and the process may exit.
func (st *detached) end(reason string) {
	if st.ended {
		return
	}
	st.ended = true
	st.conn.Close()
	st.hub.web.detacher.peers.unwatch(st)
	if st.expiry != nil {
		st.expiry.Stop()
	}
	st.hub.web.detacher.unregister(st)
	st.closed(context.Background(), reason)
	st.release()
	st.sub.Close()
}
