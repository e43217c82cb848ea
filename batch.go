package ssehub

import (
	"context"
	"errors"
)

// A batch is what a subscription passes on in one go: the frames between
// its cursors and the feeds' heads, up to a bound, in order. The frames
// are the events themselves, shared with every other subscriber; a batch
// holds only pointers to them.
type batch struct {
	frames    []*Event // in order; position frames included
	replayed  int      // how many frames at the front came from pending: not live
	events    int      // frames that are events (not position frames)
	bytes     int      // of the frames
	maxEvents int
	maxBytes  int  // always one frame at least
	lagging   bool // a cursor was more than half its feed's room behind

	// For streams (stream.go): what goes before and after the frames.
	head      []byte // the first line of a stream, before its first frames
	tail      []byte // a heartbeat, or the retry that ends a drained stream
	tailOwned bool   // tail is the batch's own, not shared bytes
}

// reset empties b for the next batch, keeping its storage.
func (b *batch) reset() {
	clear(b.frames)
	b.frames = b.frames[:0]
	b.replayed, b.events, b.bytes, b.lagging = 0, 0, 0, false
	b.head, b.tail, b.tailOwned = nil, nil, false
}

// full reports whether b holds as much as it may.
func (b *batch) full() bool { return len(b.frames) >= b.maxEvents || b.bytes >= b.maxBytes }

// add appends e to b.
func (b *batch) add(e *Event) {
	b.frames = append(b.frames, e)
	b.bytes += e.frameLen()
	if !e.position {
		b.events++
	}
}

// live returns the frames of b that are live events, for the latency
// metric.
func (b *batch) live() []*Event { return b.frames[b.replayed:] }

// batchState is what a subscription has for its reader (Subscription.next).
type batchState int

const (
	// batchReady: the batch holds frames; call next again for more.
	batchReady batchState = iota
	// batchIdle: nothing to pass on now. The reader is woken (kick) when
	// there is.
	batchIdle
	// batchBehind: a feed has moved past the subscription's cursor. The
	// reader calls resume, then next again.
	batchBehind
	// batchEnd: nothing more will come; endErr and endReason say why.
	batchEnd
)

// next gathers into b what s passes on next, in order: its pending frames
// (replayed events, position and reset frames), then the events after its
// cursors, merged in publish order. It is the only way events leave a
// subscription: Next, the stream handler and detached streams all read
// with it. One goroutine at a time may call it.
//
// Once the subscription ends it returns batchEnd at once, except when the
// hub drains or closes: then it first passes on what had been published
// when it noticed (finish).
func (s *Subscription) next(b *batch) batchState {
	select {
	case <-s.ended:
		if s.err != errDraining {
			return batchEnd
		}
		s.finish()
	default:
		select {
		case <-s.hub.done:
			s.finish()
		default:
		}
	}
	for len(s.pending) > 0 && !b.full() {
		if s.positions != nil {
			s.takeStamped(b, s.pending[0], nil)
		} else {
			s.take(b, s.pending[0])
		}
		s.pending[0] = nil
		s.pending = s.pending[1:]
		b.replayed++
	}
	if len(s.pending) == 0 {
		s.pending = nil
		if p := s.positions; p != nil && p.settle {
			// What the replay covered has been sent: each channel is at
			// the head the replay reached, or later.
			for i := range s.cursors {
				p.at[i] = max(p.at[i], s.cursors[i].skip)
			}
			p.settle = false
		}
	}
	b.lagging = s.lagging()
	for {
		if b.full() {
			return batchReady
		}
		behind := s.gather(b)
		switch {
		case len(b.frames) > 0:
			return batchReady
		case behind:
			return batchBehind
		case s.final:
			return batchEnd
		}
		// Nothing: wait for notify, unless an event slipped in before
		// waiting was set.
		s.waiting.Store(true)
		if !s.hasMore() {
			return batchIdle
		}
		s.waiting.Store(false)
	}
}

// take adds e to b, noting its id as the subscription's last. A stream
// whose ids are its positions takes with takeStamped instead.
func (s *Subscription) take(b *batch, e *Event) {
	if e.ID != "" {
		s.lastID = e.ID
	}
	b.add(e)
}

// takeStamped is take for a stream whose ids are its positions:
// cur is the cursor e was found after, or nil for a pending frame.
func (s *Subscription) takeStamped(b *batch, e *Event, cur *cursor) {
	if e.Channel != "" {
		e = s.stamp(e, cur)
	}
	s.take(b, e)
}

// replayed reports whether e, found after cur, was in the replay. A reset
// never was: it may set the channel's position back (ChannelOrderer).
func (cur *cursor) replayed(e *Event) bool {
	return e.Seq != 0 && e.Seq <= cur.skip && e.Type != ResetType
}

// gather adds to b the events after the cursors, in publish order. It
// reports whether a feed moved past a cursor.
func (s *Subscription) gather(b *batch) (behind bool) {
	if len(s.cursors) == 1 {
		cur := &s.cursors[0]
		for !b.full() {
			limit := cur.limit()
			if cur.pos >= limit {
				return false
			}
			n := len(b.frames)
			frames, end, behind := cur.c.feed.read(b.frames, cur.pos, min(b.maxEvents-n, int(limit-cur.pos)), b.maxBytes-b.bytes)
			if behind {
				return true
			}
			if end == cur.pos {
				return false
			}
			cur.pos = end
			b.frames = frames[:n]
			for _, e := range frames[n:] {
				if !cur.replayed(e) {
					s.take(b, e) // streams over one channel keep the events' ids
				}
			}
			clear(frames[len(b.frames):])
		}
		return false
	}
	// Several channels: take the earliest of the cursors' next events,
	// one at a time. Seq orders events across channels; an event without
	// one (a foreign publisher's) goes first.
	for !b.full() {
		var (
			best *cursor
			next *Event
		)
		for i := range s.cursors {
			cur := &s.cursors[i]
			if cur.pos >= cur.limit() {
				continue
			}
			e := cur.c.feed.at(cur.pos)
			if e == nil {
				if cur.c.feed.first.Load() > cur.pos {
					return true
				}
				continue
			}
			if next == nil || e.Seq < next.Seq {
				best, next = cur, e
			}
		}
		if best == nil {
			return false
		}
		best.pos++
		switch {
		case best.replayed(next):
		case s.positions != nil:
			s.takeStamped(b, next, best)
		default:
			s.take(b, next)
		}
	}
	return false
}

// limit is the position cur stops at: its feed's head, or its end when the
// subscription is finishing.
func (cur *cursor) limit() uint64 {
	head := cur.c.feed.head()
	if cur.end != 0 && cur.end < head {
		return cur.end
	}
	return head
}

// lagging reports whether a cursor is further behind its feed's head than
// half the events the feed can hold: as events keep coming, the feed is
// soon to move past it.
func (s *Subscription) lagging() bool {
	for i := range s.cursors {
		cur := &s.cursors[i]
		if f := cur.c.feed; 2*int64(f.head()-cur.pos) > f.room.Load() {
			return true
		}
	}
	return false
}

// hasMore reports whether a cursor has an event to take.
func (s *Subscription) hasMore() bool {
	for i := range s.cursors {
		if cur := &s.cursors[i]; cur.pos < cur.limit() {
			return true
		}
	}
	return false
}

// finish makes s pass on what has been published until now, then end: the
// hub drains or closes. A stream that never caught up could otherwise hold
// the hub's end up for good.
func (s *Subscription) finish() {
	if s.final {
		return
	}
	s.final = true
	for i := range s.cursors {
		// end 0 means none: a feed at position 0 has nothing to pass on,
		// and a cursor at 0 is at or past its end either way.
		s.cursors[i].end = max(s.cursors[i].c.feed.head(), 1)
	}
}

// resume continues a subscription that has fallen behind its feeds, as a
// client that reconnects with its last event id would: from the feeds'
// heads, after what the broker can replay since that id, or after a reset
// event when it cannot.
func (s *Subscription) resume(ctx context.Context) error {
	for i := range s.cursors {
		s.cursors[i].pos = s.cursors[i].c.feed.head()
	}
	if m := s.hub.metrics; m != nil {
		m.SlowSubscriber()
	}
	return s.replay(ctx, s.lastID)
}

// endErr returns why s ended, or nil while it goes on.
func (s *Subscription) endErr() error {
	select {
	case <-s.ended:
		return s.err
	default:
		return nil
	}
}

// endReason says in a few words why s ended, for the stream's log record.
func (s *Subscription) endReason() string {
	err := s.endErr()
	switch {
	case err == nil:
		return "hub closed"
	case err == errDraining:
		return "drained"
	case errors.Is(err, context.Canceled):
		return "client gone"
	}
	return err.Error()
}
