package ssehub

import (
	"container/heap"
	"sync/atomic"
)

// A feed holds the recent events of one channel, oldest first: one ring of
// pointers to events that every subscriber of the channel reads at its own
// pace. It is the fan-out's only buffer. A MemoryBroker's history is made of
// feeds, which the hub reads directly; for other brokers the hub keeps a
// feed per channel it subscribes to, filled by the broker's deliveries.
//
// Each event appended takes the next position, counting from zero. A reader
// keeps the position of the next event it is to read, its cursor, and costs
// the feed nothing: a subscriber is a few cursors, not a queue. Events leave
// the front of the feed when it holds its limit of events or bytes, when
// the budget that all feeds of its owner share runs out (feedBudget), or
// when they expire; a reader whose cursor is before the front has fallen
// behind, and must resume from the broker's history.
//
// One goroutine at a time changes a feed, with its owner's lock held
// (MemoryBroker.mu, or Hub.feedMu). Readers read without a lock: they load
// next, then the slots, then the events, and check first afterwards. An
// event leaves its slot only after first has moved past it, so a reader that
// finds first still at or before its cursor has read what it expected.
type feed struct {
	slots atomic.Pointer[[]atomic.Pointer[Event]] // length a power of two
	first atomic.Uint64                           // position of the oldest event held
	next  atomic.Uint64                           // position the next event takes
	room  atomic.Int64                            // how many events the feed holds when full (see lagging)

	// Guarded by the owner's lock.
	channel string
	stamps  []uint64 // per slot: when its event arrived, in feedBudget's order
	bytes   int64    // the size of the events held
	evicted uint64   // highest Seq of an event that left, or a floor the owner set
	index   int      // in feedBudget.heap; -1 while the feed is empty
}

// minSlots is the slot count a feed starts with. It doubles as events come,
// up to the budget's limit, and halves when few are left, so that the many
// channels that hold an event or two cost little.
const minSlots = 4

// newFeed returns an empty feed for channel that holds at most maxEvents.
func newFeed(channel string, maxEvents int) *feed {
	f := &feed{channel: channel, index: -1}
	f.room.Store(int64(maxEvents))
	slots := make([]atomic.Pointer[Event], minSlots)
	f.slots.Store(&slots)
	f.stamps = make([]uint64, minSlots)
	return f
}

// len returns the number of events held. The owner's lock must be held.
func (f *feed) len() int { return int(f.next.Load() - f.first.Load()) }

// at returns the event at position p, or nil when it is not held.
func (f *feed) at(p uint64) *Event {
	if p >= f.next.Load() {
		return nil
	}
	slots := *f.slots.Load()
	e := slots[p&uint64(len(slots)-1)].Load()
	if e == nil || f.first.Load() > p {
		return nil
	}
	return e
}

// head returns the position the next event takes: a new reader's cursor.
func (f *feed) head() uint64 { return f.next.Load() }

// read appends to dst the events from position pos on, at most maxEvents of
// them and no more than maxBytes of frames (but always one when there is
// one). It returns the position after the last event read, and behind when
// pos is no longer held: the reader has missed events.
func (f *feed) read(dst []*Event, pos uint64, maxEvents, maxBytes int) (_ []*Event, end uint64, behind bool) {
	next := f.next.Load()
	if pos >= next {
		return dst, pos, f.first.Load() > pos
	}
	slots := *f.slots.Load()
	mask := uint64(len(slots) - 1)
	start, bytes := len(dst), 0
	p := pos
	for ; p < next && len(dst)-start < maxEvents; p++ {
		e := slots[p&mask].Load()
		if e == nil {
			break // evicted meanwhile: found out below
		}
		if bytes += len(e.frame); bytes > maxBytes && p > pos {
			break
		}
		dst = append(dst, e)
	}
	if f.first.Load() > pos {
		clear(dst[start:])
		return dst[:start], pos, true
	}
	return dst, p, false
}

// push appends e, stamped with the budget's arrival order. The owner's lock
// must be held.
func (f *feed) push(e *Event, stamp uint64) {
	next, first := f.next.Load(), f.first.Load()
	slots := *f.slots.Load()
	if int(next-first) == len(slots) {
		slots = f.resize(len(slots) * 2)
	}
	i := next & uint64(len(slots)-1)
	slots[i].Store(e)
	f.stamps[i] = stamp
	f.next.Store(next + 1)
}

// pop removes the oldest event and returns it. The feed must not be empty,
// and the owner's lock must be held.
func (f *feed) pop() *Event {
	first := f.first.Load()
	slots := *f.slots.Load()
	i := first & uint64(len(slots)-1)
	e := slots[i].Load()
	// first moves before the slot is cleared: see the type's comment.
	f.first.Store(first + 1)
	slots[i].Store(nil)
	if e.Seq > f.evicted {
		f.evicted = e.Seq
	}
	if n := int(f.next.Load() - first - 1); len(slots) > minSlots && n <= len(slots)/4 {
		f.resize(len(slots) / 2)
	}
	return e
}

// resize moves the events into n slots and returns them. Readers still
// using the old slots find there the events they expect, since nothing
// writes to them any more.
func (f *feed) resize(n int) []atomic.Pointer[Event] {
	old := *f.slots.Load()
	slots := make([]atomic.Pointer[Event], n)
	stamps := make([]uint64, n)
	oldMask, mask := uint64(len(old)-1), uint64(n-1)
	for p := f.first.Load(); p < f.next.Load(); p++ {
		slots[p&mask].Store(old[p&oldMask].Load())
		stamps[p&mask] = f.stamps[p&oldMask]
	}
	f.slots.Store(&slots)
	f.stamps = stamps
	return slots
}

// frontStamp is the arrival stamp of the oldest event. The feed must not be
// empty.
func (f *feed) frontStamp() uint64 {
	return f.stamps[f.first.Load()&uint64(len(f.stamps)-1)]
}

// A feedBudget bounds the feeds of one owner: at most maxEvents events and
// maxFeedBytes bytes in each, and maxBytes in all (sizes as Event.size
// counts them). Over a bound, events leave oldest first: from the same feed
// for its own bounds, and for the total from the feed whose oldest event
// arrived first. The event just appended always stays, so that readers of
// its channel get it however large it is: the total is exceeded by at most
// that event. The owner's lock guards it.
type feedBudget struct {
	maxEvents    int
	maxFeedBytes int64
	maxBytes     int64

	bytes int64
	stamp uint64
	heap  feedHeap // feeds that hold events, by the arrival of their oldest

	// emptied, when set, is called for a feed that the total bound left
	// empty, so the owner can forget the channel.
	emptied func(*feed)
}

// push appends e to f and enforces the bounds.
func (b *feedBudget) push(f *feed, e *Event) {
	for f.len() >= b.maxEvents {
		b.pop(f)
	}
	b.stamp++
	f.push(e, b.stamp)
	size := e.size()
	f.bytes += size
	b.bytes += size
	if f.index < 0 {
		heap.Push(&b.heap, f)
	}
	byBytes := false
	for f.len() > 1 && f.bytes > b.maxFeedBytes {
		b.pop(f)
		byBytes = true
	}
	for b.bytes > b.maxBytes {
		g := b.heap[0]
		if g == f && f.len() == 1 {
			if len(b.heap) == 1 {
				break
			}
			// The event just appended stays: take the next oldest.
			g = b.heap.second()
		}
		b.pop(g)
		if g == f {
			byBytes = true
		}
		if g != f && g.len() == 0 && b.emptied != nil {
			b.emptied(g)
		}
	}
	// What the feed can hold: its count bound, or what is left once
	// bytes made events leave.
	switch {
	case byBytes:
		f.room.Store(int64(f.len()))
	case f.room.Load() < int64(f.len()):
		f.room.Store(int64(min(f.len()*2, b.maxEvents)))
	}
}

// pop removes f's oldest event and returns it.
func (b *feedBudget) pop(f *feed) *Event {
	e := f.pop()
	size := e.size()
	f.bytes -= size
	b.bytes -= size
	if f.len() == 0 {
		heap.Remove(&b.heap, f.index)
	} else {
		heap.Fix(&b.heap, f.index)
	}
	return e
}

// drop removes every event of f, for an owner that forgets the channel.
func (b *feedBudget) drop(f *feed) {
	for f.len() > 0 {
		b.pop(f)
	}
}

// feedHeap orders feeds by the arrival of their oldest event
// (container/heap).
type feedHeap []*feed

func (h feedHeap) Len() int           { return len(h) }
func (h feedHeap) Less(i, j int) bool { return h[i].frontStamp() < h[j].frontStamp() }
func (h feedHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *feedHeap) Push(x any) {
	f := x.(*feed)
	f.index = len(*h)
	*h = append(*h, f)
}
func (h *feedHeap) Pop() any {
	old := *h
	f := old[len(old)-1]
	old[len(old)-1] = nil
	f.index = -1
	*h = old[:len(old)-1]
	return f
}

// second returns the feed whose oldest event is the oldest after the
// heap's top: one of the top's children. The heap holds two feeds or more.
func (h feedHeap) second() *feed {
	if len(h) == 2 || h.Less(1, 2) {
		return h[1]
	}
	return h[2]
}
