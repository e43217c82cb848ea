package ssehub

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Defaults for MemoryConfig.
const (
	DefaultHistorySize  = 1000
	DefaultHistoryAge   = time.Hour
	DefaultHistoryBytes = 256 << 20
)

// MemoryConfig configures a MemoryBroker. The zero value is ready to use.
type MemoryConfig struct {
	// HistorySize is how many events each channel keeps for replay.
	// Zero means DefaultHistorySize; negative disables history.
	HistorySize int
	// HistoryAge is how long an event stays replayable. Zero means
	// DefaultHistoryAge; negative keeps events until HistorySize evicts them.
	HistoryAge time.Duration
	// HistoryBytes bounds the memory the history holds, over all channels:
	// the events' text and about 256 bytes of bookkeeping per event. Past
	// it, the oldest events leave first, whatever their channel. Zero
	// means DefaultHistoryBytes.
	HistoryBytes int64
	// ChannelHistoryBytes bounds the memory one channel's history holds,
	// so that one busy channel cannot take the whole budget. Zero means a
	// quarter of HistoryBytes. The latest event of a channel is kept
	// whatever its size.
	ChannelHistoryBytes int64
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// MemoryBroker is a Broker and Replayer for a single process: the Hub's
// default. Each channel keeps a bounded history of recent events, which a
// Hub reads directly as the buffer of its subscribers: an event is held
// once, however many subscribers it has.
//
// Ids it assigns are decimal numbers of 16 or more digits that grow with
// every publish and start from the microsecond clock when the broker is
// created. They sort in publish order both as numbers and as strings, and an
// id left over from an earlier process is recognised as unknown.
type MemoryBroker struct {
	size int
	age  time.Duration
	now  func() time.Time

	mu        sync.Mutex
	closed    bool
	start     uint64 // the first seq this broker can issue
	seq       uint64 // the last seq issued
	channels  map[string]*memChannel
	budget    feedBudget
	lastSweep time.Time
	forgotten uint64 // highest seq evicted from a channel since forgotten
	keys      idempotencyKeys
}

// sweepEvery is how often Publish walks all channels to drop expired events
// and forget channels that have neither events nor subscribers.
const sweepEvery = time.Minute

// memChannel is the state of a channel that has history or subscribers.
type memChannel struct {
	history *feed  // nil when history is off
	evicted uint64 // when history is off: highest seq gone by
	subs    []*memSub
}

func (ch *memChannel) retained() int {
	if ch.history == nil {
		return 0
	}
	return ch.history.len()
}

// lastEvicted is the highest seq of the channel that can no longer be
// replayed.
func (ch *memChannel) lastEvicted() uint64 {
	if ch.history == nil {
		return ch.evicted
	}
	return ch.history.evicted
}

type memSub struct {
	deliver func(*Event)
}

var (
	_ Broker   = (*MemoryBroker)(nil)
	_ Replayer = (*MemoryBroker)(nil)
)

// NewMemoryBroker returns a MemoryBroker.
func NewMemoryBroker(cfg MemoryConfig) *MemoryBroker {
	b := &MemoryBroker{size: cfg.HistorySize, age: cfg.HistoryAge, now: cfg.Now, channels: map[string]*memChannel{}}
	if b.size == 0 {
		b.size = DefaultHistorySize
	}
	if b.age == 0 {
		b.age = DefaultHistoryAge
	}
	if b.now == nil {
		b.now = time.Now
	}
	b.budget = feedBudget{maxEvents: b.size, maxBytes: cfg.HistoryBytes, maxFeedBytes: cfg.ChannelHistoryBytes}
	if b.budget.maxBytes <= 0 {
		b.budget.maxBytes = DefaultHistoryBytes
	}
	if b.budget.maxFeedBytes <= 0 {
		b.budget.maxFeedBytes = b.budget.maxBytes / 4
	}
	b.budget.emptied = b.emptied
	b.start = uint64(b.now().UnixMicro())
	b.seq = b.start - 1
	return b
}

func formatSeq(seq uint64) string { return fmt.Sprintf("%016d", seq) }

// Publish implements Broker.
func (b *MemoryBroker) Publish(ctx context.Context, m Message) (*Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, ErrClosed
	}
	now := b.now()
	if e, err := b.keys.published(m, now); e != nil || err != nil {
		return e, err
	}
	// Keep ids close to the clock so that they stay unique across restarts.
	b.seq = max(b.seq+1, uint64(now.UnixMicro()))
	id := m.ID
	if id == "" {
		id = formatSeq(b.seq)
	}
	e := NewEvent(m.Channel, id, m.Type, m.Data, m.Retry, b.seq, now)
	b.keys.remember(m, e, now)
	if now.Sub(b.lastSweep) > sweepEvery {
		b.sweep(now)
	}
	ch := b.channels[m.Channel]
	if ch == nil {
		if b.size < 0 {
			// No history and no subscriber: a resume from before this
			// event must learn that it missed it.
			b.forgotten = e.Seq
			return e, nil
		}
		ch = b.channel(m.Channel)
	}
	if ch.history != nil {
		b.budget.push(ch.history, e)
		b.expire(ch, now)
	} else {
		ch.evicted = e.Seq // history is off: nothing is kept for replay
	}
	// Delivery under the lock keeps every channel in publish order;
	// deliver never blocks.
	for _, s := range ch.subs {
		s.deliver(e)
	}
	return e, nil
}

// channel returns the state of the named channel, creating it. b.mu must be held.
func (b *MemoryBroker) channel(name string) *memChannel {
	ch := b.channels[name]
	if ch == nil {
		// A channel forgotten earlier may have lost events; a resume from
		// before them must still learn that, so the new state starts
		// where the forgotten ones ended.
		ch = &memChannel{evicted: b.forgotten}
		if b.size > 0 {
			ch.history = newFeed(name, b.size)
			ch.history.evicted = b.forgotten
		}
		b.channels[name] = ch
	}
	return ch
}

// emptied forgets a channel whose last event the history budget took, when
// nobody subscribes to it. b.mu is held.
func (b *MemoryBroker) emptied(f *feed) {
	if ch := b.channels[f.channel]; ch != nil && ch.history == f && len(ch.subs) == 0 {
		b.forget(f.channel, ch)
	}
}

// forget drops the state of a channel that has neither events nor
// subscribers. What it had evicted is folded into b.forgotten, so a resume
// from before it still learns that it missed events. b.mu must be held.
func (b *MemoryBroker) forget(name string, ch *memChannel) {
	b.forgotten = max(b.forgotten, ch.lastEvicted())
	delete(b.channels, name)
}

// expire drops events older than the history age from ch. b.mu must be held.
func (b *MemoryBroker) expire(ch *memChannel, now time.Time) {
	if b.age < 0 || ch.history == nil {
		return
	}
	f := ch.history
	for f.len() > 0 && now.Sub(f.at(f.first.Load()).Time) > b.age {
		b.budget.pop(f)
	}
}

// sweep expires every channel and forgets those left with neither events
// nor subscribers. b.mu must be held.
func (b *MemoryBroker) sweep(now time.Time) {
	b.lastSweep = now
	for name, ch := range b.channels {
		b.expire(ch, now)
		if ch.retained() == 0 && len(ch.subs) == 0 {
			b.forget(name, ch)
		}
	}
}

// Subscribe implements Broker.
func (b *MemoryBroker) Subscribe(ctx context.Context, channel string, deliver func(*Event)) (func(), error) {
	_, cancel, err := b.subscribe(ctx, channel, deliver)
	return cancel, err
}

// subscribeFeed is Subscribe for a Hub of this process. It also returns the
// channel's history, which the hub reads as the feed of its subscribers,
// or nil when the broker keeps no history.
func (b *MemoryBroker) subscribeFeed(ctx context.Context, channel string, deliver func(*Event)) (*feed, func(), error) {
	return b.subscribe(ctx, channel, deliver)
}

func (b *MemoryBroker) subscribe(ctx context.Context, channel string, deliver func(*Event)) (*feed, func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, nil, ErrClosed
	}
	ch := b.channel(channel)
	s := &memSub{deliver: deliver}
	ch.subs = append(ch.subs, s)
	return ch.history, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		ch.subs = slices.DeleteFunc(ch.subs, func(x *memSub) bool { return x == s })
		if len(ch.subs) == 0 && ch.retained() == 0 && b.channels[channel] == ch {
			b.forget(channel, ch)
		}
	}, nil
}

// Head implements Replayer: the clock, or the last seq the channels have
// seen when that is later.
func (b *MemoryBroker) Head(ctx context.Context, channels []string) (Cursor, error) {
	if err := ctx.Err(); err != nil {
		return Cursor{}, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return Cursor{}, ErrClosed
	}
	return b.head(channels, b.now()), nil
}

// head returns the position of channels at now: the clock, or the highest
// seq any of them has seen (published, evicted, or forgotten) when later.
// Publishes on other channels do not move it. It reserves the position, so
// that every later publish gets a larger seq. b.mu must be held.
func (b *MemoryBroker) head(channels []string, now time.Time) Cursor {
	h := max(uint64(now.UnixMicro()), b.start-1)
	for _, name := range channels {
		ch := b.channels[name]
		if ch == nil {
			h = max(h, b.forgotten)
			continue
		}
		h = max(h, ch.lastEvicted())
		if ch.retained() > 0 {
			f := ch.history
			h = max(h, f.at(f.head()-1).Seq)
		}
	}
	b.seq = max(b.seq, h)
	return Cursor{ID: formatSeq(h), Seq: h}
}

// Replay implements Replayer.
func (b *MemoryBroker) Replay(ctx context.Context, channels []string, lastEventID string, fn func(*Event) error) (Cursor, error) {
	if err := ctx.Err(); err != nil {
		return Cursor{}, err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return Cursor{}, ErrClosed
	}
	now := b.now()
	head := b.head(channels, now)
	pos, ok := b.resolve(channels, lastEventID)
	var events []*Event
	for _, name := range channels {
		ch := b.channels[name]
		if ch == nil {
			if b.forgotten > pos {
				ok = false
				break
			}
			continue
		}
		b.expire(ch, now)
		if ch.lastEvicted() > pos {
			ok = false
		}
		if !ok {
			break
		}
		if f := ch.history; f != nil {
			for p := f.next.Load(); p > f.first.Load() && f.at(p-1).Seq > pos; p-- {
				events = append(events, f.at(p-1))
			}
		}
	}
	b.mu.Unlock()
	if !ok {
		return head, fmt.Errorf("%w: %q", ErrUnknownID, lastEventID)
	}
	// Collected newest first per channel; put all of them in publish order.
	slices.SortFunc(events, func(x, y *Event) int { return cmp.Compare(x.Seq, y.Seq) })
	for _, e := range events {
		if err := fn(e); err != nil {
			return head, err
		}
	}
	return head, nil
}

// resolve finds the position id stands for: the seq of the retained event
// with that id (publishers may set their own ids), or the seq an id or
// position this broker issued encodes. An id that names more than one
// retained event of channels, or one event and another issued position,
// is ambiguous: resolve finds no position rather than guess, since a
// wrong guess would skip the events in between. b.mu must be held.
func (b *MemoryBroker) resolve(channels []string, id string) (uint64, bool) {
	var (
		matches int
		pos     uint64
	)
	for _, name := range channels {
		ch := b.channels[name]
		if ch == nil || ch.history == nil {
			continue
		}
		f := ch.history
		for p := f.next.Load(); p > f.first.Load(); p-- {
			if e := f.at(p - 1); e.ID == id {
				matches++
				pos = e.Seq
			}
		}
	}
	issued, isSeq := b.issued(id)
	switch {
	case matches == 1 && (!isSeq || issued == pos):
		return pos, true
	case matches == 0 && isSeq:
		return issued, true
	}
	return 0, false
}

// issued reports whether id has the form of an id or position this broker
// issued (16 or more digits, within the seqs it has handed out), and the
// seq it stands for. b.mu must be held.
func (b *MemoryBroker) issued(id string) (uint64, bool) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil || len(id) < 16 || n < b.start-1 || n > b.seq {
		return 0, false
	}
	return n, true
}

// Close implements Broker. Subscriptions get no further events.
func (b *MemoryBroker) Close(context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ErrClosed
	}
	b.closed = true
	b.channels = nil
	return nil
}
