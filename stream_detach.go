package ssehub

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ssehub/ssehub/internal/sse"
)

// Detached streams (Config.Detach).
//
// net/http gives every HTTP/1.1 stream a goroutine (the handler's, its
// stack grown to about 8 KB by the time it writes), a goroutine that
// watches for the client going away, a 4 KB read buffer, a 4 KB write
// buffer and a 2 KB chunking buffer: over 20 KB that an idle stream holds
// for nothing. A detached stream sends its response headers through
// net/http, then takes the connection over (http.ResponseController's
// Hijack) and lets the handler return. What stays is the connection, the
// Subscription and a small struct.
//
// Events wake the stream: Subscription.offer calls its wake function,
// which queues the stream for a small pool of writer goroutines (at most
// GOMAXPROCS, started on demand, gone when there is nothing to write). A
// writer drains everything the stream has queued into one chunk of the
// chunked body and writes it with one non-blocking write, so a burst of
// events costs one system call per stream instead of one per event. When
// the socket cannot take the whole chunk, a goroutine of its own finishes
// the write, bounded by WriteTimeout, and the stream then goes back to the
// pool: only a stream with a slow reader holds a goroutine.
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

// maxChunk bounds the bytes a writer gathers into one write, so that one
// busy stream does not hold a writer for long.
const maxChunk = 32 << 10

// chunkRoom is the room left at the start of a write buffer for the chunk
// size line: up to 8 hex digits and CRLF.
const chunkRoom = 10

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

	peers peerWatch
}

// scratch is what a writer works with: the chunk it builds and, when the
// hub has Metrics, the live events in it.
type scratch struct {
	buf  []byte
	live []*Event
}

// detached is one stream taken over from net/http.
type detached struct {
	hub  *Hub
	sub  *Subscription
	conn net.Conn
	nb   nbWriter
	nbOK bool // nb works; otherwise every write goes through writeRest

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
	ended     bool     // the connection is closed and the subscription released
	rest      []byte   // what a blocked write has yet to send
	restN     int      // events in rest, for Metrics
	restLive  []*Event // live events in rest, for Metrics
	endReason string   // set when the write in progress is the stream's last
	events    int64

	watchFD int32       // the fd peerWatch knows the connection by, or -1
	release func()      // gives back the connection slot
	expiry  *time.Timer // ends the stream when its credential expires; may be nil
	remote  string
	since   time.Time
}

// detach takes the stream of sub over from w once its headers are set and
// WriteHeader has been called. The stream runs in ctx and holds its
// connection slot until it calls release. detach reports false, having
// changed nothing, when the connection cannot be taken over (HTTP/2, TLS,
// or a ResponseWriter without Hijack); the caller then serves the stream
// itself.
func (h *Hub) detach(ctx context.Context, w http.ResponseWriter, r *http.Request, sub *Subscription, release func()) bool {
	if r.ProtoMajor != 1 || r.TLS != nil || !hijacker(w) {
		return false
	}
	// The first line and the events waiting to be replayed go out with
	// the headers, in one write; net/http chooses the chunked encoding, and
	// the body goes on in chunks. Should Hijack still fail, the caller
	// sends the first line again (a repeated retry field or comment
	// changes nothing for the client) and goes on after those events.
	rc := http.NewResponseController(w)
	if h.cfg.WriteTimeout > 0 {
		// Hijack lifts it.
		rc.SetWriteDeadline(time.Now().Add(h.cfg.WriteTimeout))
	}
	w.Write(h.firstLine())
	n := 0
	for e := sub.nextPending(); e != nil; e = sub.nextPending() {
		w.Write(e.frame)
		if !e.position {
			n++
		}
	}
	if rc.Flush() != nil {
		return false
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		return false
	}
	st := &detached{hub: h, sub: sub, conn: conn, watchFD: -1, release: release, remote: r.RemoteAddr, since: time.Now()}
	st.events = int64(n)
	st.written(n, nil)
	if sc, ok := conn.(syscall.Conn); ok && canWriteNonblocking {
		if raw, err := sc.SyscallConn(); err == nil {
			st.nb.init(raw)
			st.nbOK = true
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
		st.expiry = time.AfterFunc(time.Until(deadline), func() { sub.end(errCredentialExpired) })
	}
	h.detacher.peers.watch(st)
	// From here on the stream may run, in a writer: what is queued from
	// now on wakes it; what was queued or happened before, this does.
	sub.setWake(st.wake)
	h.detacher.register(h, st)
	select {
	case <-sub.ended:
		st.wake()
	default:
		if len(sub.queue) > 0 {
			st.wake()
		}
	}
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

// firstLine is what a stream starts with: the retry field, or a comment
// when no retry is configured.
func (h *Hub) firstLine() []byte {
	if h.cfg.Retry > 0 {
		return sse.AppendRetry(nil, int(h.cfg.Retry/time.Millisecond))
	}
	return sse.Heartbeat
}

// setWake sets the function s calls after queueing an event and when it
// ends.
func (s *Subscription) setWake(f func()) { s.wake.Store(&f) }

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
		// The ticker may have ended the others already.
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
		st.hub.detacher.push(st)
		return
	}
	if st.blocked.Load() {
		select {
		case <-st.sub.ended:
			// A write waits for a client that stopped reading, and the
			// hub has let the subscriber go: cut the write short. A
			// drained stream is still to get its queued events.
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
	return &scratch{buf: make([]byte, 0, maxChunk+4<<10)}
}

func (d *detacher) release(sc *scratch) {
	if cap(sc.buf) > 4*maxChunk {
		return // grown by a large event; let it go
	}
	clear(sc.live)
	sc.live = sc.live[:0]
	d.mu.Lock()
	if len(d.spare) < 2*runtime.GOMAXPROCS(0) {
		d.spare = append(d.spare, sc)
	}
	d.mu.Unlock()
}

// run handles the stream's wake-ups until none is left, or until a write
// blocks and writeRest takes the stream over.
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

// step writes what the stream has to send, and reports whether a write
// blocked and was handed to writeRest.
func (st *detached) step(sc *scratch) (blocked bool) {
	h, sub := st.hub, st.sub
	if st.readable.Swap(false) && st.nb.peerClosed() {
		st.end("client gone", false)
		return false
	}
	for {
		// finish says how the stream ends once its queue is out: the hub
		// is draining it or closing.
		finish := ""
		select {
		case <-sub.ended:
			if sub.err != errDraining {
				st.end(sub.err.Error(), true)
				return false
			}
			finish = "drained"
		default:
			select {
			case <-h.done:
				finish = "hub closed"
			default:
			}
		}
		b, n, more := sc.buf[:chunkRoom], 0, false
		sc.live = sc.live[:0]
		for {
			if len(b) >= maxChunk {
				more = true
				break
			}
			e, live := sub.nextPending(), false
			if e == nil {
				e, live = sub.tryNext(), true
			}
			if e == nil {
				break
			}
			b = append(b, e.frame...)
			if e.position {
				continue // an id-only frame, not an event
			}
			n++
			if live && h.metrics != nil {
				sc.live = append(sc.live, e)
			}
		}
		st.events += int64(n)
		if st.heartbeat.Swap(false) && len(b) == chunkRoom {
			b = append(b, sse.Heartbeat...)
		}
		if finish == "drained" && !more && h.cfg.Retry > 0 {
			// When to come back, spread as Drain's waves are.
			retry := h.cfg.Retry
			if h.drainJitter > 0 {
				retry += rand.N(h.drainJitter)
			}
			b = sse.AppendRetry(b, int(retry/time.Millisecond))
		}
		if len(b) == chunkRoom && finish == "" {
			return false
		}
		var p []byte
		if len(b) > chunkRoom {
			p = frameChunk(b)
		}
		if finish != "" && !more {
			// The queue is out: end the body, then the connection.
			p = append(p, "0\r\n\r\n"...)
			st.endReason = finish
		}
		blocked, err := st.write(p)
		if err != nil {
			st.end("write: "+err.Error(), false)
			return false
		}
		if blocked {
			st.restN = n
			st.restLive = append(st.restLive[:0], sc.live...)
			return true
		}
		st.written(n, sc.live)
		if st.endReason != "" {
			st.end(st.endReason, false)
			return false
		}
		if !more {
			return false
		}
	}
}

// written passes n events written, live among them, to the metrics.
func (st *detached) written(n int, live []*Event) {
	m := st.hub.metrics
	if m == nil || n == 0 {
		return
	}
	m.EventsWritten(n)
	now := time.Now()
	for _, e := range live {
		m.WriteLatency(now.Sub(e.Time))
	}
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

// write sends p without waiting. When the socket takes only part of it,
// the rest goes to writeRest in a goroutine of its own, and write reports
// blocked: the stream then belongs to that goroutine.
func (st *detached) write(p []byte) (blocked bool, err error) {
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
	st.rest = append(st.rest[:0], p[n:]...)
	st.blocked.Store(true)
	go st.writeRest()
	return true, nil
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
		_, err = st.conn.Write(st.rest)
	}
	st.blocked.Store(false)
	if err == nil && timeout > 0 {
		// Non-blocking writes fail at once once a deadline has passed.
		err = st.conn.SetWriteDeadline(time.Time{})
	}
	st.rest = nil
	if err == nil {
		st.written(st.restN, st.restLive)
	}
	st.restLive = nil
	switch {
	case err != nil:
		reason := "write: " + err.Error()
		select {
		case <-st.sub.ended:
			reason = st.sub.err.Error() // wake cut the write short
		default:
		}
		st.end(reason, false)
	case st.endReason != "":
		st.end(st.endReason, false)
	}
	d := &st.hub.detacher
	sc := d.scratch()
	st.run(sc)
	d.release(sc)
}

// end closes the stream, ending its body first when clean, releases its
// subscription and logs it.
func (st *detached) end(reason string, clean bool) {
	if st.ended {
		return
	}
	st.ended = true
	if clean && st.nbOK {
		// Best effort: a client that does not read gets no ending.
		st.nb.write([]byte("0\r\n\r\n"))
	}
	st.conn.Close()
	st.hub.detacher.peers.unwatch(st)
	if st.expiry != nil {
		st.expiry.Stop()
	}
	st.hub.detacher.unregister(st)
	st.sub.Close()
	st.release()
	st.hub.log.LogAttrs(context.Background(), slog.LevelInfo, "stream closed",
		slog.String("remote", st.remote),
		slog.Any("channels", channelNames(st.sub)),
		slog.Duration("duration", time.Since(st.since)),
		slog.Int64("events", st.events),
		slog.String("reason", reason))
}
