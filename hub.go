package ssehub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ssehub/ssehub/internal/sse"
)

// Hub fans events out from a Broker to local subscribers: HTTP streams (it
// is an http.Handler) and Go subscriptions. It holds one broker subscription
// per channel, however many local subscribers the channel has.
//
// All methods are safe for concurrent use.
type Hub struct {
	cfg      Config
	broker   Broker
	replayer Replayer // nil when the broker keeps no history
	// perChannel: the broker's Seq orders events per channel only
	// (ChannelOrderer), so a position over several channels is one Seq
	// per channel.
	perChannel bool
	feeder     feeder // the broker, when it lends its history as feeds
	ownBroker  bool
	log        *slog.Logger
	metrics    Metrics // nil records nothing

	mu         sync.Mutex
	channels   map[string]*hubChannel
	closing    bool
	publishing sync.WaitGroup
	streams    sync.WaitGroup

	done      <-chan struct{}    // closed when Close tells subscriptions to end
	doneCtx   context.Context    // done as a context
	closeDone context.CancelFunc // closes done

	// The feeds the hub keeps itself, for channels whose broker lends
	// none, share one budget.
	feedMu  sync.Mutex
	backlog feedBudget

	web httpFace // the HTTP side: routes, streams, connection limits
}

// httpFace is the state of a hub's HTTP side.
type httpFace struct {
	mux         *http.ServeMux
	firstLine   []byte        // what a stream starts with
	drainJitter time.Duration // set by Drain before it ends the first stream
	conns       connLimiter   // streams open over HTTP, for the connection limits
	detacher    detacher      // streams taken over from net/http (Config.Detach)
}

// A feeder is a Broker that keeps each channel's recent events in a feed
// the hub can read: MemoryBroker. Its subscribeFeed is Subscribe, and also
// returns the channel's feed, or nil when it keeps none.
type feeder interface {
	subscribeFeed(ctx context.Context, channel string, deliver func(*Event)) (*feed, func(), error)
}

// hubChannel is the local state of one channel: its broker subscription,
// its feed and the subscribers to notify as events arrive.
type hubChannel struct {
	name  string
	refs  int           // guarded by Hub.mu
	ready chan struct{} // closed once the broker subscription is settled
	err   error         // set before ready is closed
	stop  func()
	feed  *feed // set before ready is closed
	own   bool  // the hub keeps feed, filled as the broker delivers

	mu   sync.RWMutex
	subs []*cursor // the subscribers' cursors in feed
}

// notify tells the subscribers that wait for events that one arrived. A
// subscriber that is busy is not disturbed: it reads the feed when it is
// done with what it has.
func (c *hubChannel) notify() {
	c.mu.RLock()
	for _, cur := range c.subs {
		cur.sub.notify()
	}
	c.mu.RUnlock()
}

// add registers cur, setting it at the feed's head: its subscription gets
// the events that arrive from now on.
func (c *hubChannel) add(cur *cursor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur.c, cur.pos, cur.index = c, c.feed.head(), len(c.subs)
	c.subs = append(c.subs, cur)
}

// remove unregisters cur.
func (c *hubChannel) remove(cur *cursor) {
	c.mu.Lock()
	defer c.mu.Unlock()
	last := len(c.subs) - 1
	moved := c.subs[last]
	c.subs[cur.index], moved.index = moved, cur.index
	c.subs[last] = nil
	c.subs = c.subs[:last]
}

// New returns a Hub configured by cfg.
func New(cfg Config) (*Hub, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	h := &Hub{cfg: cfg, broker: cfg.Broker, log: cfg.Logger, metrics: cfg.Metrics, channels: map[string]*hubChannel{}}
	h.doneCtx, h.closeDone = context.WithCancel(context.Background())
	h.done = h.doneCtx.Done()
	if h.broker == nil {
		h.broker = NewMemoryBroker(MemoryConfig{})
		h.ownBroker = true
	}
	h.replayer, _ = h.broker.(Replayer)
	if o, ok := h.broker.(ChannelOrderer); ok && o.ChannelOrder() {
		h.perChannel = true
	}
	h.feeder, _ = h.broker.(feeder)
	h.web.firstLine = sse.Heartbeat
	if cfg.Retry > 0 {
		h.web.firstLine = sse.AppendRetry(nil, int(cfg.Retry/time.Millisecond))
	}
	h.web.mux = h.routes()
	h.backlog = feedBudget{maxEvents: cfg.Backlog, maxBytes: cfg.BacklogBytes, maxFeedBytes: max(cfg.BacklogBytes/4, 1)}
	return h, nil
}

// Broker returns the broker the hub publishes through.
func (h *Hub) Broker() Broker { return h.broker }

// Publish validates m, publishes it through the broker and returns the id
// of the event. Errors wrap ErrInvalidChannel, ErrInvalidData and the other
// validation sentinels, ErrMessageTooLarge, ErrUnavailable (not published),
// ErrOutcomeUnknown (maybe published: send it again with the same
// IdempotencyKey), ErrIdempotencyKeyReused or ErrClosed.
//
// Publish never waits for a subscriber. Once the event is out, it waits,
// 100 ms at most, while the writers of the hub's detached streams run late,
// so that a publisher going flat out neither runs every stream past its
// history nor makes events wait long for the writers.
func (h *Hub) Publish(ctx context.Context, m Message) (string, error) {
	if err := m.Normalize(); err != nil {
		return "", err
	}
	e, err := h.publish(ctx, m)
	if err != nil {
		return "", err
	}
	return e.ID, nil
}

// publish publishes m, which has been normalized.
func (h *Hub) publish(ctx context.Context, m Message) (*Event, error) {
	if len(m.Data) > h.cfg.MaxMessageBytes {
		return nil, fmt.Errorf("%w: %d bytes of data, limit %d", ErrMessageTooLarge, len(m.Data), h.cfg.MaxMessageBytes)
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	h.publishing.Add(1)
	h.mu.Unlock()
	bctx, cancel := ctx, context.CancelFunc(func() {})
	if h.cfg.PublishTimeout > 0 {
		bctx, cancel = context.WithTimeout(ctx, h.cfg.PublishTimeout)
	}
	e, err := h.broker.Publish(bctx, m)
	cancel()
	h.publishing.Done()
	if err != nil {
		return nil, err
	}
	if h.metrics != nil {
		h.metrics.EventPublished()
	}
	h.web.detacher.pace(ctx)
	return e, nil
}

// Close ends the hub: it refuses new publishes and subscriptions, waits for
// publishes in flight (or for ctx), then ends every subscription once it has
// passed on the events published until then, and closes the broker if the
// hub created it. Use it with http.Server.RegisterOnShutdown, since Shutdown
// waits for streams to end and a stream does not end by itself.
func (h *Hub) Close(ctx context.Context) error {
	if err := h.stopAccepting(ctx); err != nil {
		return err
	}
	return h.finish(ctx)
}

// stopAccepting begins the end of the hub: new publishes and subscriptions
// are refused from now on, and it waits for the publishes in flight, or for
// ctx. It returns ErrClosed when the hub is already ending.
func (h *Hub) stopAccepting(ctx context.Context) error {
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return ErrClosed
	}
	h.closing = true
	h.mu.Unlock()

	waited := make(chan struct{})
	go func() { h.publishing.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-ctx.Done():
	}
	return nil
}

// finish tells the remaining subscriptions to end once they have passed on
// what was published, waits for them (or for ctx), and closes the broker if
// the hub created it.
func (h *Hub) finish(ctx context.Context) error {
	h.closeDone()
	for _, s := range h.subscriptions() {
		s.kick()
	}
	streams := make(chan struct{})
	go func() { h.streams.Wait(); close(streams) }()
	select {
	case <-streams:
	case <-ctx.Done():
	}
	err := ctx.Err()
	if h.ownBroker {
		if cerr := h.broker.Close(ctx); err == nil {
			err = cerr
		}
	}
	return err
}

// Subscription is one subscriber's view of the hub: retained events after
// its last event id, then live events, on one or more channels.
//
// A subscription holds no events of its own: it keeps a cursor in the feed
// of each of its channels, and takes what lies between its cursors and the
// feeds' heads when it is ready for more (next). Publishers never wait for
// it, and it never waits for other subscribers. A subscription that falls
// so far behind that its feed has moved past its cursor continues the way a
// client that reconnects with its last event id would: from what the broker
// can still replay, or with a reset event.
type Subscription struct {
	hub     *Hub
	cursors []cursor // one per channel
	pending []*Event // replayed events, and position and reset frames: sent before the cursors' events
	// For a stream over several channels of a ChannelOrderer broker,
	// whose events' ids are made of its positions; nil otherwise.
	positions *positionState
	lastID    string // id of the last frame taken: where a resume after falling behind starts
	final     bool   // the subscription is finishing: each cursor stops at its end
	one       [1]*Event

	signal  chan struct{}          // notify's wake-up for Next and handler streams
	waiting atomic.Bool            // the reader found nothing and waits for notify
	wake    atomic.Pointer[func()] // when set, called instead of signalling (stream_detach.go)

	endOnce     sync.Once
	ended       chan struct{}
	err         error // why the subscription ended; set before ended is closed
	releaseOnce sync.Once
	stopCtx     func() bool
	stopHub     func() bool // for Go subscriptions: release when the hub finishes
}

// cursor is a subscription's place in the feed of one of its channels.
// Its channel holds a pointer to it: a subscription's cursors never move.
type cursor struct {
	sub   *Subscription
	c     *hubChannel
	pos   uint64 // position of the next event to take
	end   uint64 // when the subscription is finishing, the position to stop at
	skip  uint64 // events with 0 < Seq <= skip were in the replay
	index int    // in c.subs; guarded by c.mu
}

// Subscribe subscribes to channels (DefaultChannel when empty). With a
// non-empty lastEventID, the subscription first yields every retained event
// published after it, in order, then live events, each once. When the hub
// cannot resume from lastEventID, the first event has type ResetType.
//
// The subscription ends when ctx ends or when the hub closes (ErrClosed;
// Next still returns the events published until then). A subscription that
// is not read for a while goes on from where its reader left off, as far
// as the broker's history reaches, then with a ResetType event. Call Close
// when done with it.
func (h *Hub) Subscribe(ctx context.Context, channels []string, lastEventID string) (*Subscription, error) {
	s, err := h.subscribe(ctx, channels, lastEventID)
	if err != nil {
		return nil, err
	}
	// A Go subscription may never be read or closed again; it must not
	// hold Close up. What was published before stays readable through Next.
	s.stopHub = context.AfterFunc(h.doneCtx, s.release)
	return s, nil
}

// subscribe is Subscribe for the hub's own streams, which release their
// subscription themselves once they have written what it has.
func (h *Hub) subscribe(ctx context.Context, channels []string, lastEventID string) (*Subscription, error) {
	names, err := h.checkChannels(channels)
	if err != nil {
		return nil, err
	}
	s := &Subscription{hub: h, ended: make(chan struct{}), signal: make(chan struct{}, 1), cursors: make([]cursor, 0, len(names))}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		return nil, ErrClosed
	}
	h.streams.Add(1)
	h.mu.Unlock()
	if h.metrics != nil {
		h.metrics.SubscriptionOpened()
	}

	// A new client's position is the head before it subscribes, so that
	// the catch-up below covers anything published in between.
	var start Cursor
	if lastEventID == "" && h.replayer != nil {
		if start, err = h.replayer.Head(ctx, names); err != nil {
			s.release()
			return nil, fmt.Errorf("head: %w", err)
		}
	}

	// Live first, then history: an event published meanwhile is either
	// in the replay or after a cursor, and next skips what the replay
	// covered.
	for _, name := range names {
		c, err := h.acquire(ctx, name)
		if err != nil {
			s.release()
			return nil, err
		}
		// Within its capacity: the cursors do not move.
		s.cursors = append(s.cursors, cursor{sub: s})
		c.add(&s.cursors[len(s.cursors)-1])
	}
	if h.perChannel && len(s.cursors) > 1 {
		s.orderPositions()
		if pos, ok := ParsePositions(lastEventID, names); ok {
			s.setPositions(pos)
		}
	}
	if lastEventID != "" {
		err = s.replay(ctx, lastEventID)
	} else if start.ID != "" {
		err = s.catchUp(ctx, start)
	}
	if err != nil {
		s.release()
		return nil, err
	}
	s.stopCtx = context.AfterFunc(ctx, func() { s.end(ctx.Err()) })
	return s, nil
}

// names returns the subscription's channels.
func (s *Subscription) names() []string {
	names := make([]string, len(s.cursors))
	for i := range s.cursors {
		names[i] = s.cursors[i].c.name
	}
	return names
}

// catchUp starts a subscription that has no last event id from start, the
// broker's head taken before it subscribed: it passes on the events
// published since (those that beat the live subscription), and first a
// frame that sets the client's last event id to start. A client that
// reconnects before its first event then resumes from there instead of
// missing what was published while it was away.
func (s *Subscription) catchUp(ctx context.Context, start Cursor) error {
	s.pending = append(s.pending, positionEvent(start))
	s.setPositions(start.Channels)
	head, err := s.hub.replayer.Replay(ctx, s.names(), start.ID, func(e *Event) error {
		s.pending = append(s.pending, e)
		return nil
	})
	switch {
	case errors.Is(err, ErrUnknownID):
		// Nothing to catch up from; live events start after head.
		s.pending = s.pending[:1]
	case err != nil:
		return fmt.Errorf("catch up from %q: %w", start.ID, err)
	}
	s.setHead(head)
	return nil
}

// setHead notes head, the broker's position when a replay began: live
// events at or before it were in the replay.
func (s *Subscription) setHead(head Cursor) {
	for i := range s.cursors {
		cur := &s.cursors[i]
		cur.skip = head.Seq
		if head.Channels != nil {
			cur.skip = head.Channels[cur.c.name]
		}
	}
	if s.positions != nil {
		s.positions.settle = true
	}
}

// positionEvent is a frame with only an id field: it sets the client's last
// event id without dispatching an event. Next does not return it.
func positionEvent(c Cursor) *Event {
	return &Event{ID: c.ID, Seq: c.Seq, Time: time.Now(), frame: []byte("id: " + c.ID + "\n\n"), position: true}
}

// dropPositions removes the position frame from what s sends first.
func (s *Subscription) dropPositions() {
	s.pending = slices.DeleteFunc(s.pending, func(e *Event) bool { return e.position })
}

// replay queues what the broker retains after lastEventID on the
// subscription's channels, or a reset event when it cannot.
func (s *Subscription) replay(ctx context.Context, lastEventID string) error {
	h := s.hub
	if h.replayer == nil {
		s.pending = append(s.pending, resetEvent(Cursor{}))
		if h.metrics != nil {
			h.metrics.Replay(ReplayReset)
		}
		return nil
	}
	n := len(s.pending)
	head, err := h.replayer.Replay(ctx, s.names(), lastEventID, func(e *Event) error {
		s.pending = append(s.pending, e)
		return nil
	})
	outcome := ReplayResumed
	switch {
	case errors.Is(err, ErrUnknownID):
		clear(s.pending[n:])
		s.pending = append(s.pending[:n], resetEvent(head))
		outcome = ReplayReset
	case err != nil:
		err = fmt.Errorf("replay after %q: %w", lastEventID, err)
		outcome = ReplayFailed
	}
	if h.metrics != nil {
		h.metrics.Replay(outcome)
	}
	if outcome == ReplayFailed {
		return err
	}
	s.setHead(head)
	return nil
}

// resetEvent tells a subscriber that it missed events the hub cannot
// replay. Its id is the broker's head, so a reconnect after it resumes
// from there.
func resetEvent(head Cursor) *Event {
	return NewEvent("", head.ID, ResetType, []byte("{}"), 0, 0, time.Now())
}

func (h *Hub) checkChannels(channels []string) ([]string, error) {
	if len(channels) == 0 {
		return []string{DefaultChannel}, nil
	}
	names := make([]string, 0, len(channels))
	for _, name := range channels {
		if err := ValidChannel(name); err != nil {
			return nil, err
		}
		if !slices.Contains(names, name) {
			names = append(names, name)
		}
	}
	if len(names) > h.cfg.MaxChannels {
		return nil, fmt.Errorf("%w: %d channels, limit %d", ErrTooManyChannels, len(names), h.cfg.MaxChannels)
	}
	return names, nil
}

// acquire returns the named channel with its broker subscription in place,
// taking a reference on it.
func (h *Hub) acquire(ctx context.Context, name string) (*hubChannel, error) {
	h.mu.Lock()
	c := h.channels[name]
	first := c == nil
	if first {
		c = &hubChannel{name: name, ready: make(chan struct{})}
		h.channels[name] = c
	}
	c.refs++
	h.mu.Unlock()

	if first {
		h.subscribeChannel(ctx, c)
	} else {
		select {
		case <-c.ready:
		case <-ctx.Done():
			h.unref(c)
			return nil, ctx.Err()
		}
	}
	if c.err != nil {
		h.unref(c)
		return nil, c.err
	}
	return c, nil
}

// subscribeChannel subscribes c at the broker and settles it.
func (h *Hub) subscribeChannel(ctx context.Context, c *hubChannel) {
	defer close(c.ready)
	// The broker subscription outlives this caller, so it must not end
	// with the caller's context.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), subscribeTimeout)
	defer cancel()
	if h.feeder != nil {
		c.feed, c.stop, c.err = h.feeder.subscribeFeed(sctx, c.name, func(*Event) { h.arrived(c) })
		if c.err == nil && c.feed == nil {
			// The broker keeps no history: the hub keeps the feed.
			c.stop()
			c.stop = nil
		}
	}
	if c.feed == nil && c.err == nil {
		c.feed, c.own = newFeed(c.name, h.cfg.Backlog), true
		c.stop, c.err = h.broker.Subscribe(sctx, c.name, func(e *Event) { h.receive(c, e) })
	}
	if c.err != nil {
		c.err = fmt.Errorf("subscribe %q: %w", c.name, c.err)
	} else if h.metrics != nil {
		h.metrics.ChannelSubscribed()
	}
}

// receive appends an event the broker delivered to the feed the hub keeps
// for c.
func (h *Hub) receive(c *hubChannel, e *Event) {
	h.feedMu.Lock()
	h.backlog.push(c.feed, e)
	h.feedMu.Unlock()
	h.arrived(c)
}

// arrived tells c's subscribers that an event is in its feed.
func (h *Hub) arrived(c *hubChannel) {
	if m := h.metrics; m != nil {
		m.EventReceived()
	}
	c.notify()
}

// unref drops a reference on c, ending its broker subscription with the last.
func (h *Hub) unref(c *hubChannel) {
	h.mu.Lock()
	c.refs--
	last := c.refs == 0
	if last {
		delete(h.channels, c.name)
	}
	h.mu.Unlock()
	if !last {
		return
	}
	if c.stop != nil {
		c.stop()
	}
	if c.own {
		h.feedMu.Lock()
		h.backlog.drop(c.feed)
		h.feedMu.Unlock()
	}
	if c.err == nil && h.metrics != nil {
		h.metrics.ChannelUnsubscribed()
	}
}

// notify tells s that an event arrived on one of its channels. Only a
// reader that found nothing and waits is woken, once.
func (s *Subscription) notify() {
	if s.waiting.Load() && s.waiting.Swap(false) {
		s.kick()
	}
}

// kick wakes whoever serves s: the detached stream's writer, or the
// goroutine that waits in Next or in a stream handler.
func (s *Subscription) kick() {
	if w := s.wake.Load(); w != nil {
		(*w)()
		return
	}
	select {
	case s.signal <- struct{}{}:
	default:
	}
}

// setWake sets the function that wakes the subscription's reader.
func (s *Subscription) setWake(f func()) { s.wake.Store(&f) }

// end marks s ended with err and reports whether this call did it.
func (s *Subscription) end(err error) bool {
	ended := false
	s.endOnce.Do(func() {
		s.err = err
		close(s.ended)
		ended = true
	})
	if ended {
		s.kick()
	}
	return ended
}

// release detaches s from its channels.
func (s *Subscription) release() {
	s.releaseOnce.Do(func() {
		for i := range s.cursors {
			cur := &s.cursors[i]
			cur.c.remove(cur)
			s.hub.unref(cur.c)
		}
		if m := s.hub.metrics; m != nil {
			m.SubscriptionClosed()
		}
		s.hub.streams.Done()
	})
}

// Close ends the subscription and releases its resources. It is safe to
// call more than once and concurrently with Next.
func (s *Subscription) Close() {
	s.end(ErrClosed)
	if s.stopCtx != nil {
		s.stopCtx()
	}
	if s.stopHub != nil {
		s.stopHub()
	}
	s.release()
}

// Next returns the next event: replayed ones first, then live ones. It
// returns an error once the subscription has ended (the context's error or
// ErrClosed), or when ctx ends.
func (s *Subscription) Next(ctx context.Context) (*Event, error) {
	for {
		b := batch{frames: s.one[:0], maxEvents: 1, maxBytes: math.MaxInt}
		switch s.next(&b) {
		case batchReady:
			if e := b.frames[0]; !e.position {
				return e, nil
			}
		case batchBehind:
			if err := s.resume(ctx); err != nil {
				s.end(err)
				return nil, err
			}
		case batchEnd:
			if s.endErr() == nil {
				s.end(ErrClosed) // the hub closed
			}
			return nil, s.endErr()
		case batchIdle:
			select {
			case <-s.signal:
			case <-s.ended:
			case <-s.hub.done:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
}
