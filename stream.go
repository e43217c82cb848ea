package ssehub

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"runtime"
	"time"

	"github.com/ssehub/ssehub/internal/sse"
)

// An HTTP event stream is written from one place whichever way it is
// served: compose decides what goes out next (the first line, a batch of
// frames, a heartbeat, the retry that ends a drained stream), written
// passes what went out to the metrics, and closed logs the end. Two
// transports only write: serveHandler in the handler's goroutine (HTTP/2,
// TLS, or without Config.Detach), and detached streams in a pool of writers
// (stream_detach.go). Both write a batch as one write.

// Bounds of one batch: the bytes of frames one write carries (a single
// frame may be larger), and the frames. A busy stream then writes often
// enough, does not hold a writer for long, and a write that blocks holds on
// to a bounded share of the feeds.
const (
	maxBatchBytes  = 32 << 10
	maxBatchFrames = 1024
)

// stream is an HTTP event stream: a subscription and its writer's state.
type stream struct {
	hub     *Hub
	sub     *Subscription
	remote  string
	since   time.Time
	events  int64 // events written
	started bool  // the first line is out
	reason  string

	h2       bool      // served over HTTP/2
	deadline time.Time // the write deadline set on the handler's connection
}

// streamAct is what a stream's transport does once it has written a batch.
type streamAct int

const (
	actMore   streamAct = iota // compose again
	actWait                    // wait to be woken, then compose again
	actResume                  // call sub.resume, then compose again
	actEnd                     // end the stream, for st.reason
)

func (h *Hub) newStream(sub *Subscription, r *http.Request) *stream {
	return &stream{hub: h, sub: sub, remote: r.RemoteAddr, since: time.Now(), h2: r.ProtoMajor == 2}
}

// compose fills b with what the stream writes next, and says what comes
// after. heartbeat asks for a heartbeat, which goes out only when nothing
// else does.
func (st *stream) compose(b *batch, heartbeat bool) streamAct {
	b.reset()
	b.maxEvents, b.maxBytes = maxBatchFrames, maxBatchBytes
	if !st.started {
		st.started = true
		b.head = st.hub.web.firstLine
	}
	switch st.sub.next(b) {
	case batchReady:
		return actMore
	case batchBehind:
		return actResume
	case batchEnd:
		st.reason = st.sub.endReason()
		h := st.hub
		if st.reason == "drained" && h.cfg.Retry > 0 {
			// When to come back, spread as Drain's waves are.
			retry := h.cfg.Retry
			if h.web.drainJitter > 0 {
				retry += rand.N(h.web.drainJitter)
			}
			b.tail, b.tailOwned = sse.AppendRetry(nil, int(retry/time.Millisecond)), true
		}
		return actEnd
	}
	if heartbeat && b.head == nil {
		b.tail = sse.Heartbeat
	}
	return actWait
}

// empty reports whether b has nothing to write.
func (b *batch) empty() bool { return len(b.frames) == 0 && b.head == nil && b.tail == nil }

// written passes a batch that went out to the stream's counts and the
// metrics.
func (st *stream) written(b *batch) {
	st.events += int64(b.events)
	m := st.hub.metrics
	if m == nil || b.events == 0 {
		return
	}
	m.EventsWritten(b.events)
	now := time.Now()
	for _, e := range b.live() {
		m.WriteLatency(now.Sub(e.Time))
	}
}

// writeFailed returns the reason a stream ends for after a failed write,
// counting a client that took nothing for WriteTimeout as slow.
func (st *stream) writeFailed(err error) string {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if m := st.hub.metrics; m != nil {
			m.SlowSubscriber()
		}
		return ErrSlowSubscriber.Error()
	}
	return "write: " + err.Error()
}

// closed logs the end of the stream. It comes before the subscription is
// released: once the last one is, Close returns and the process may exit.
func (st *stream) closed(ctx context.Context, reason string) {
	st.hub.log.LogAttrs(ctx, slog.LevelInfo, "stream closed",
		slog.String("remote", st.remote),
		slog.Any("channels", st.sub.names()),
		slog.Duration("duration", time.Since(st.since)),
		slog.Int64("events", st.events),
		slog.String("reason", reason))
}

// writeResponse writes b through net/http: the frames into its buffer, then
// one flush, under a write deadline.
func (st *stream) writeResponse(w http.ResponseWriter, rc *http.ResponseController, b *batch) error {
	if t := st.hub.cfg.WriteTimeout; t > 0 {
		// A ResponseWriter that cannot set one (a test recorder) is fine.
		set := func(d time.Time) error {
			if err := rc.SetWriteDeadline(d); err != nil && !errors.Is(err, http.ErrNotSupported) {
				return err
			}
			return nil
		}
		now := time.Now()
		switch {
		case st.h2:
			// HTTP/2 resets a stream once its deadline passes, written
			// or not: the deadline covers this batch only.
			if err := set(now.Add(t)); err != nil {
				return err
			}
			defer set(time.Time{})
		case now.After(st.deadline.Add(-t / 2)):
			// Setting a deadline costs about as much as a small write: a
			// busy stream moves it on only once half of it has gone by,
			// so that a client that takes nothing is cut after between
			// half the timeout and all of it. A deadline passed while
			// idle fails nothing but the next write, which moves it first.
			st.deadline = now.Add(t)
			if err := set(st.deadline); err != nil {
				return err
			}
		}
	}
	if b.head != nil {
		if _, err := w.Write(b.head); err != nil {
			return err
		}
	}
	for _, e := range b.frames {
		if e.idLine != nil {
			if _, err := w.Write(e.idLine); err != nil {
				return err
			}
		}
		if _, err := w.Write(e.frame); err != nil {
			return err
		}
	}
	if b.tail != nil {
		if _, err := w.Write(b.tail); err != nil {
			return err
		}
	}
	return rc.Flush()
}

// serveHandler writes the stream from the handler's goroutine until it
// ends, starting with act, and returns why it ended.
func (st *stream) serveHandler(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, b *batch, act streamAct) string {
	h, sub := st.hub, st.sub
	var tick <-chan time.Time
	if h.cfg.Heartbeat > 0 {
		// Twice per interval, a heartbeat to a stream that wrote nothing
		// since the previous tick: none goes longer than the interval
		// without a write, and a busy one gets none.
		t := time.NewTicker(h.cfg.Heartbeat / 2)
		defer t.Stop()
		tick = t.C
	}
	heartbeat, wrote := false, true
	for {
		switch act {
		case actResume:
			if err := sub.resume(ctx); err != nil {
				return "resume: " + err.Error()
			}
		case actEnd:
			return st.reason
		case actWait:
			// The subscription's end, the request's (which ends the
			// subscription) and the hub's (finish kicks every
			// subscription) all come as a signal too.
			select {
			case <-sub.signal:
				// Whatever else is ready runs first: on a busy hub, more
				// events arrive meanwhile and go out in the same write.
				runtime.Gosched()
			case <-tick:
				heartbeat, wrote = !wrote, false
			}
		}
		act = st.compose(b, heartbeat)
		heartbeat = false
		if b.empty() {
			continue
		}
		if err := st.writeResponse(w, rc, b); err != nil {
			return st.writeFailed(err)
		}
		wrote = true
		st.written(b)
	}
}
