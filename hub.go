package ssehub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Hub fans events out from a Broker to local subscribers: HTTP streams (it
// is an http.Handler) and Go subscriptions. It holds one broker subscription
// per channel, however many local subscribers the channel has.
//
// All methods are safe for concurrent use.
type Hub struct {
	cfg       Config
	broker    Broker
	replayer  Replayer // nil when the broker keeps no history
	ownBroker bool
	log       *slog.Logger
	metrics   Metrics // nil records nothing

	mu         sync.Mutex
	channels   map[string]*hubChannel
	closing    bool
	publishing sync.WaitGroup
	streams    sync.WaitGroup

	done      <-chan struct{}    // closed when Close tells subscriptions to end
	doneCtx   context.Context    // done as a context
	closeDone context.CancelFunc // closes done

	drainJitter time.Duration // set by Drain before it ends the first stream

	conns    connLimiter // streams open over HTTP, for the connection limits
	detacher detacher    // streams taken over from net/http (Config.Detach)
}

// hubChannel is the local state of one channel: its broker subscription and
// the subscribers it feeds.
type hubChannel struct {
	name  string
	refs  int           // guarded by Hub.mu
	ready chan struct{} // closed once the broker subscription is settled
	err   error         // set before ready is closed
	stop  func()

	mu   sync.RWMutex
	subs map[*Subscription]struct{}
}

// dispatch hands e to every subscriber of the channel without blocking.
func (c *hubChannel) dispatch(e *Event) {
	c.mu.RLock()
	for s := range c.subs {
		s.offer(e)
	}
	c.mu.RUnlock()
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
	return h, nil
}

// Broker returns the broker the hub publishes through.
func (h *Hub) Broker() Broker { return h.broker }

// Publish validates m, publishes it through the broker and returns the id
// of the event. Errors wrap ErrInvalidChannel, ErrInvalidData and the other
// validation sentinels, ErrMessageTooLarge, ErrUnavailable (not published),
// ErrOutcomeUnknown (maybe published: send it again with the same
// IdempotencyKey), ErrIdempotencyKeyReused or ErrClosed.
func (h *Hub) Publish(ctx context.Context, m Message) (string, error) {
	e, err := h.publish(ctx, m)
	if err != nil {
		return "", err
	}
	return e.ID, nil
}

func (h *Hub) publish(ctx context.Context, m Message) (*Event, error) {
	if err := m.Normalize(); err != nil {
		return nil, err
	}
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
	defer h.publishing.Done()
	if h.cfg.PublishTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, h.cfg.PublishTimeout)
		defer cancel()
	}
	e, err := h.broker.Publish(ctx, m)
	if err == nil && h.metrics != nil {
		h.metrics.EventPublished()
	}
	return e, err
}

// Close ends the hub: it refuses new publishes and subscriptions, waits for
// publishes in flight (or for ctx), then ends every subscription once it has
// passed on what it has already queued, and closes the broker if the hub
// created it. Use it with http.Server.RegisterOnShutdown, since Shutdown
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
// what is queued, waits for them (or for ctx), and closes the broker if the
// hub created it.
func (h *Hub) finish(ctx context.Context) error {
	h.closeDone()
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
type Subscription struct {
	hub      *Hub
	channels []*hubChannel
	queue    chan *Event
	pending  []*Event // replayed events, sent before the queue
	skip     uint64   // queued events with 0 < Seq <= skip were replayed

	settled     chan struct{} // closed when Subscribe returns
	endOnce     sync.Once
	ended       chan struct{}
	err         error // why the subscription ended; set before ended is closed
	releaseOnce sync.Once
	stopCtx     func() bool
	stopHub     func() bool            // for Go subscriptions: release when the hub finishes
	wake        atomic.Pointer[func()] // when set, called as events are queued and when s ends (stream_detach.go)
}

// Subscribe subscribes to channels (DefaultChannel when empty). With a
// non-empty lastEventID, the subscription first yields every retained event
// published after it, in order, then live events, each once. When the hub
// cannot resume from lastEventID, the first event has type ResetType.
//
// The subscription ends when ctx ends, when it falls QueueSize events
// behind (ErrSlowSubscriber), or when the hub closes (ErrClosed; Next still
// returns the events queued until then). Call Close when done with it.
func (h *Hub) Subscribe(ctx context.Context, channels []string, lastEventID string) (*Subscription, error) {
	s, err := h.subscribe(ctx, channels, lastEventID)
	if err != nil {
		return nil, err
	}
	// A Go subscription may never be read or closed again; it must not
	// hold Close up. What it has queued stays readable through Next.
	s.stopHub = context.AfterFunc(h.doneCtx, s.release)
	return s, nil
}

// subscribe is Subscribe for the hub's own streams, which release their
// subscription themselves once they have written what it queued.
func (h *Hub) subscribe(ctx context.Context, channels []string, lastEventID string) (*Subscription, error) {
	names, err := h.checkChannels(channels)
	if err != nil {
		return nil, err
	}
	s := &Subscription{hub: h, queue: make(chan *Event, h.cfg.QueueSize), ended: make(chan struct{}), settled: make(chan struct{})}
	defer close(s.settled)
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
	// in the replay or queued, and the queue skips what the replay covered.
	for _, name := range names {
		c, err := h.acquire(ctx, name)
		if err != nil {
			s.release()
			return nil, err
		}
		c.mu.Lock()
		c.subs[s] = struct{}{}
		c.mu.Unlock()
		s.channels = append(s.channels, c)
	}
	if lastEventID != "" {
		err = s.replay(ctx, names, lastEventID)
	} else if start.ID != "" {
		err = s.catchUp(ctx, names, start)
	}
	if err != nil {
		s.release()
		return nil, err
	}
	s.stopCtx = context.AfterFunc(ctx, func() { s.end(ctx.Err()) })
	return s, nil
}

// catchUp starts a subscription that has no last event id from start, the
// broker's head taken before it subscribed: it passes on the events
// published since (those that beat the live subscription), and first a
// frame that sets the client's last event id to start. A client that
// reconnects before its first event then resumes from there instead of
// missing what was published while it was away.
func (s *Subscription) catchUp(ctx context.Context, names []string, start Cursor) error {
	s.pending = append(s.pending, positionEvent(start))
	head, err := s.hub.replayer.Replay(ctx, names, start.ID, func(e *Event) error {
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
	s.skip = head.Seq
	return nil
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

func (s *Subscription) replay(ctx context.Context, names []string, lastEventID string) error {
	h := s.hub
	if h.replayer == nil {
		s.pending = append(s.pending, resetEvent(Cursor{}))
		if h.metrics != nil {
			h.metrics.Replay(ReplayReset)
		}
		return nil
	}
	head, err := h.replayer.Replay(ctx, names, lastEventID, func(e *Event) error {
		s.pending = append(s.pending, e)
		return nil
	})
	outcome := ReplayResumed
	switch {
	case errors.Is(err, ErrUnknownID):
		s.pending = append(s.pending[:0], resetEvent(head))
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
	s.skip = head.Seq
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
		c = &hubChannel{name: name, ready: make(chan struct{}), subs: map[*Subscription]struct{}{}}
		h.channels[name] = c
	}
	c.refs++
	h.mu.Unlock()

	if first {
		// The broker subscription outlives this caller, so it must not end
		// with the caller's context.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), subscribeTimeout)
		deliver := c.dispatch
		if m := h.metrics; m != nil {
			deliver = func(e *Event) { m.EventReceived(); c.dispatch(e) }
		}
		c.stop, c.err = h.broker.Subscribe(sctx, name, deliver)
		cancel()
		if c.err != nil {
			c.err = fmt.Errorf("subscribe %q: %w", name, c.err)
		} else if h.metrics != nil {
			h.metrics.ChannelSubscribed()
		}
		close(c.ready)
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

// unref drops a reference on c, ending its broker subscription with the last.
func (h *Hub) unref(c *hubChannel) {
	h.mu.Lock()
	c.refs--
	last := c.refs == 0
	if last {
		delete(h.channels, c.name)
	}
	h.mu.Unlock()
	if last && c.stop != nil {
		c.stop()
	}
	if last && c.err == nil && h.metrics != nil {
		h.metrics.ChannelUnsubscribed()
	}
}

// offer queues e for s, ending s when its queue is full.
func (s *Subscription) offer(e *Event) {
	select {
	case s.queue <- e:
		s.notify()
	default:
		if s.end(ErrSlowSubscriber) {
			if m := s.hub.metrics; m != nil {
				m.SlowSubscriber()
			}
			// Not here: offer runs under the channel's read lock, and
			// Subscribe may still be adding channels to s.
			go func() {
				<-s.settled
				s.release()
			}()
		}
	}
}

// end marks s ended with err and reports whether this call did it.
func (s *Subscription) end(err error) bool {
	ended := false
	s.endOnce.Do(func() {
		s.err = err
		close(s.ended)
		ended = true
	})
	if ended {
		s.notify()
	}
	return ended
}

// notify calls the wake function, if one is set.
func (s *Subscription) notify() {
	if w := s.wake.Load(); w != nil {
		(*w)()
	}
}

// release detaches s from its channels.
func (s *Subscription) release() {
	s.releaseOnce.Do(func() {
		for _, c := range s.channels {
			c.mu.Lock()
			delete(c.subs, s)
			c.mu.Unlock()
			s.hub.unref(c)
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
// returns an error once the subscription has ended (the context's error,
// ErrSlowSubscriber or ErrClosed) or when ctx ends.
func (s *Subscription) Next(ctx context.Context) (*Event, error) {
	for e := s.nextPending(); e != nil; e = s.nextPending() {
		if !e.position {
			return e, nil
		}
	}
	for {
		select {
		case e := <-s.queue:
			if s.replayed(e) {
				continue
			}
			return e, nil
		case <-s.ended:
			if s.err == errDraining {
				// The hub drains: hand over what is queued, then end.
				if e := s.tryNext(); e != nil {
					return e, nil
				}
			}
			return nil, s.err
		case <-s.hub.done:
			// The hub is closing: hand over what is queued, then end.
			if e := s.tryNext(); e != nil {
				return e, nil
			}
			s.end(ErrClosed)
			return nil, ErrClosed
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

func (s *Subscription) nextPending() *Event {
	if len(s.pending) == 0 {
		return nil
	}
	e := s.pending[0]
	s.pending[0] = nil
	s.pending = s.pending[1:]
	return e
}

// tryNext returns a queued event without waiting, or nil.
func (s *Subscription) tryNext() *Event {
	for {
		select {
		case e := <-s.queue:
			if s.replayed(e) {
				continue
			}
			return e
		default:
			return nil
		}
	}
}

func (s *Subscription) replayed(e *Event) bool { return e.Seq != 0 && e.Seq <= s.skip }
