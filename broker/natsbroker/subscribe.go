package natsbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub"
)

// Consumer settings.
const (
	// maxRetry caps the backoff between attempts to create the consumer.
	maxRetry = 2 * time.Second
	// missedBeats is how many heartbeats may go missing before the
	// consumer counts as lost.
	missedBeats = 3
	// pendingBytes bounds what the client library queues for the consumer
	// before it drops messages, which then makes the consumer start over.
	pendingBytes = 64 << 20
	// inactiveThreshold is how long the server keeps a consumer nobody
	// listens to, when the broker could not delete it.
	inactiveThreshold = 30 * time.Second
	// checkParallel bounds the requests in flight while checking which
	// channels lost events.
	checkParallel = 8
	// createTimeout bounds one attempt to create the consumer. It takes
	// milliseconds when the cluster has its leaders.
	createTimeout = 2 * time.Second
)

// consumer is one incarnation of the broker's JetStream consumer.
type consumer struct {
	gen        uint64
	ids        *idCodec // of the stream incarnation it reads
	name       string
	sub        *nats.Subscription
	reconnects uint64 // the connection's reconnect count when it started
	dseq       uint64 // last consumer sequence received; only its handler uses it
	// received counts messages and heartbeats. The run loop notes when it
	// last changed, which keeps the clock off the path of every event.
	received   atomic.Uint64
	noted      uint64       // received at the last tick; only the run loop uses it
	lastActive atomic.Int64 // Unix nanoseconds
	// The last probe (see stuck): when, what the broker had delivered,
	// and the stream's last sequence number. Only the run loop uses them.
	created, probed      time.Time
	probeSeen, probeLast uint64
}

// tick notes, at now, whether the consumer received anything since the
// last tick.
func (c *consumer) tick(now time.Time) {
	if n := c.received.Load(); n != c.noted {
		c.noted = n
		c.lastActive.Store(now.UnixNano())
	}
}

// silentFor returns how long the consumer had sent nothing, not even a
// heartbeat, at its last tick.
func (c *consumer) silentFor(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, c.lastActive.Load()))
}

// Subscribe implements ssehub.Broker. All channels share the broker's one
// consumer; a channel's first subscription only registers it, and Subscribe
// returns once the consumer is in place. While the consumer cannot be
// created, Subscribe fails at once with an error wrapping
// ssehub.ErrUnavailable. deliver is called with the broker's lock held and
// must not call the Broker.
func (b *Broker) Subscribe(ctx context.Context, name string, deliver func(*ssehub.Event)) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s := &sub{deliver: deliver}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, ssehub.ErrClosed
	}
	b.start()
	if !b.up && b.downErr != nil {
		err := b.downErr
		b.mu.Unlock()
		return nil, unavailable(fmt.Sprintf("subscribe %q", name), err)
	}
	ch := b.channels[name]
	if ch == nil {
		ch = &channel{name: name}
		b.channels[name] = ch
	}
	ch.subs = append(ch.subs, s)
	upCh := b.upCh
	b.mu.Unlock()

	cancel := func() { b.unsubscribe(ch, s) }
	select {
	case <-upCh:
		return cancel, nil
	case <-ctx.Done():
		cancel()
		return nil, unavailable(fmt.Sprintf("subscribe %q", name), ctx.Err())
	case <-b.done:
		cancel()
		return nil, ssehub.ErrClosed
	}
}

// unsubscribe removes s from ch, and ch from the broker when s was its
// last subscription. It is safe to call more than once.
func (b *Broker) unsubscribe(ch *channel, s *sub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	i := slices.Index(ch.subs, s)
	if i < 0 {
		return
	}
	ch.subs = slices.Delete(ch.subs, i, i+1)
	if len(ch.subs) == 0 && b.channels[ch.name] == ch {
		delete(b.channels, ch.name)
	}
}

// start starts the consumer's loop, once. A broker that only publishes
// never creates a consumer. b.mu must be held.
func (b *Broker) start() {
	if b.started || b.closed {
		return
	}
	b.started = true
	b.wg.Add(1)
	go b.run()
}

// run keeps a consumer going until the broker closes: it creates one,
// with backoff while that fails, and replaces it when it stops delivering,
// skips messages, or the connection comes back after a break.
func (b *Broker) run() {
	defer b.wg.Done()
	status := b.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED)
	defer b.nc.RemoveStatusListener(status)
	tick := time.NewTicker(b.hb)
	defer tick.Stop()
	delay := minBackoff
	failures := 0
	for {
		b.mu.Lock()
		cur := b.cur
		b.mu.Unlock()
		if cur == nil {
			err := b.startConsumer()
			if b.isClosed() {
				b.dropConsumer(nil)
				return
			}
			if err != nil {
				b.mu.Lock()
				b.downErr, b.lost = err, true
				b.mu.Unlock()
				b.metrics.BrokerError()
				if failures == 0 {
					b.log.LogAttrs(context.Background(), slog.LevelWarn, "natsbroker: cannot create the consumer; retrying",
						slog.String("error", err.Error()))
				}
				failures++
				wait := delay/2 + rand.N(delay/2+1)
				delay = min(2*delay, maxRetry)
				select {
				case <-b.done:
					return
				case <-time.After(wait):
				case <-status:
				}
				continue
			}
			delay, failures = minBackoff, 0
			continue
		}
		select {
		case <-b.done:
			b.dropConsumer(cur)
			return
		case <-b.reset:
			b.dropConsumer(cur)
		case s := <-status:
			if s != nats.CONNECTED {
				b.log.LogAttrs(context.Background(), slog.LevelWarn, "natsbroker: connection lost; the consumer will start over")
			}
			// Messages sent while the connection was down are lost; the
			// next consumer starts after the last one delivered.
			b.dropConsumer(cur)
		case now := <-tick.C:
			if b.nc.IsConnected() {
				b.connectedAt.Store(now.UnixNano())
			}
			cur.tick(now)
			switch {
			case cur.silentFor(now) > missedBeats*b.hb:
				b.log.LogAttrs(context.Background(), slog.LevelWarn, "natsbroker: consumer stopped delivering; recreating it")
				b.dropConsumer(cur)
			case b.nc.Stats().Reconnects != cur.reconnects:
				b.dropConsumer(cur)
			case now.Sub(cur.probed) >= probeEvery*b.hb && b.stuck(cur, now):
				b.log.LogAttrs(context.Background(), slog.LevelWarn, "natsbroker: consumer sends heartbeats but no events the stream has; recreating it")
				b.dropConsumer(cur)
			}
		}
	}
}

// probeEvery is how many heartbeats apart the run loop compares what the
// consumer delivered with what the stream holds.
const probeEvery = 5

// stuck reports whether consumer c delivered nothing since the last probe
// while the stream then already held events after the last one it
// delivered: a consumer that sends heartbeats but no events, as one on a
// replica that stopped following the stream can. Only the run loop calls
// it.
func (b *Broker) stuck(c *consumer, now time.Time) bool {
	st := b.st.Load()
	if st == nil {
		return false
	}
	ctx, cancel := context.WithTimeout(b.ctx, attemptTimeout)
	defer cancel()
	info, err := b.info(ctx, st, "")
	if err != nil {
		return false // the stream does not answer: Check says so
	}
	b.mu.Lock()
	seen := b.seen
	b.mu.Unlock()
	stuck := c.probed.After(c.created) && seen <= c.probeSeen && c.probeLast > c.probeSeen
	c.probed, c.probeSeen, c.probeLast = now, seen, info.State.LastSeq
	return stuck
}

// askReset asks the run loop to replace consumer c.
func (b *Broker) askReset(c *consumer, why string) {
	b.mu.Lock()
	current := b.cur == c
	b.mu.Unlock()
	if !current {
		return
	}
	b.log.LogAttrs(context.Background(), slog.LevelInfo, "natsbroker: consumer starts over", slog.String("reason", why))
	select {
	case b.reset <- struct{}{}:
	default:
	}
}

// dropConsumer stops c (when it is the current consumer) and has the
// server delete it. Subscriptions stay; the next consumer resumes after
// the last event delivered.
func (b *Broker) dropConsumer(c *consumer) {
	b.mu.Lock()
	if c == nil {
		c = b.cur
	}
	if c == nil || b.cur != c {
		b.mu.Unlock()
		return
	}
	b.cur = nil
	if b.up {
		b.up = false
		b.upCh = make(chan struct{})
		b.lost = true
	}
	b.mu.Unlock()
	c.sub.Unsubscribe()
	if c.name == "" {
		return
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), attemptTimeout)
		defer cancel()
		// The server also removes it after inactiveThreshold.
		b.js.DeleteConsumer(ctx, b.stream, c.name)
	}()
}

// startConsumer creates a consumer that delivers from the event after the
// last one delivered, or from the next new event the first time.
func (b *Broker) startConsumer() error {
	if !b.nc.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s)", b.nc.Status())
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.pubWait)
	defer cancel()
	st, err := b.streams(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ssehub.ErrClosed
	}
	if b.seenTag != "" && b.seenTag != st.ids.tag {
		// The stream was deleted and created again: its sequence numbers
		// start over, and what subscribers saw is gone. They start again
		// from the new stream's first event.
		b.log.LogAttrs(ctx, slog.LevelWarn, "natsbroker: the stream was created again; sending resets", slog.String("stream", b.stream))
		for _, ch := range b.channels {
			b.deliver(ch, resetEvent(ch.name, st.position(0)))
		}
		b.seen, b.fromFirst = 0, true
	}
	b.seenTag = st.ids.tag
	start := b.seen + 1
	fresh := b.seen == 0 && !b.fromFirst
	b.gen++
	now := time.Now()
	c := &consumer{gen: b.gen, ids: st.ids, reconnects: b.nc.Stats().Reconnects, created: now, probed: now}
	c.lastActive.Store(now.UnixNano())
	b.mu.Unlock()

	inbox := b.nc.NewInbox()
	c.sub, err = b.nc.Subscribe(inbox, func(m *nats.Msg) { b.handle(c, m) })
	if err != nil {
		return err
	}
	c.sub.SetPendingLimits(-1, pendingBytes)
	cfg := jetstream.ConsumerConfig{
		Description:       "ssehub live events",
		DeliverSubject:    inbox,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       start,
		AckPolicy:         jetstream.AckNonePolicy,
		FlowControl:       true,
		IdleHeartbeat:     b.hb,
		MemoryStorage:     true,
		Replicas:          1,
		InactiveThreshold: inactiveThreshold,
	}
	if fresh {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverNewPolicy, 0
	}
	// Messages may come before the answer: c is current from now on.
	b.mu.Lock()
	b.cur = c
	b.mu.Unlock()
	// A request sent while the cluster elects a leader may never be
	// answered: give up on it soon and send another.
	cctx, ccancel := context.WithTimeout(ctx, createTimeout)
	cons, err := b.js.CreatePushConsumer(cctx, b.stream, cfg)
	ccancel()
	if err != nil {
		b.mu.Lock()
		if b.cur == c {
			b.cur = nil
		}
		b.mu.Unlock()
		c.sub.Unsubscribe()
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			b.st.CompareAndSwap(st, nil)
		}
		return err
	}
	info := cons.CachedInfo()

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != c {
		return nil // dropped meanwhile; the loop sees no consumer
	}
	c.name = info.Name
	b.fromFirst = false
	if b.seen == 0 {
		b.seen = info.Delivered.Stream
	}
	b.up, b.downErr = true, nil
	close(b.upCh)
	if b.lost {
		b.lost = false
		b.metrics.BrokerReconnected()
		b.log.LogAttrs(ctx, slog.LevelInfo, "natsbroker: consumer restored",
			slog.Int("channels", len(b.channels)), slog.Uint64("from", start))
	}
	return nil
}

func resetEvent(channel string, at ssehub.Cursor) *ssehub.Event {
	return ssehub.NewEvent(channel, at.ID, ssehub.ResetType, []byte("{}"), 0, 0, time.Now())
}

// deliver passes e to the subscriptions of ch. b.mu must be held.
func (b *Broker) deliver(ch *channel, e *ssehub.Event) {
	for _, s := range ch.subs {
		s.deliver(e)
	}
}

// handle processes one message of consumer c. The client library calls it
// for one message at a time, in order.
func (b *Broker) handle(c *consumer, m *nats.Msg) {
	c.received.Add(1)
	if status := m.Header.Get("Status"); status != "" && len(m.Data) == 0 {
		b.control(c, m, status)
		return
	}
	ack, ok := parseAck(m.Reply)
	if !ok {
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "natsbroker: consumer message without metadata",
			slog.String("subject", m.Subject), slog.String("reply", m.Reply))
		return
	}
	if ack.consumerSeq != c.dseq+1 {
		b.askReset(c, fmt.Sprintf("consumer sequence %d after %d", ack.consumerSeq, c.dseq))
		return
	}
	c.dseq = ack.consumerSeq
	seq := ack.streamSeq

	b.mu.Lock()
	if b.cur != c || b.closed || seq <= b.seen {
		b.mu.Unlock()
		return
	}
	prev := b.seen
	held := b.channels[b.channelOf(m.Subject)] != nil
	b.mu.Unlock()

	if prev != 0 && seq > prev+1 {
		// The stream no longer holds the events in between.
		b.repair(c, prev, seq)
	}
	var (
		e   *ssehub.Event
		err error
	)
	if held {
		e, err = b.decode(c.ids, m.Subject, m.Header, m.Data, seq, ack.time)
		if err != nil {
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "natsbroker: skipped a message that is not a valid event",
				slog.String("subject", m.Subject), slog.Uint64("seq", seq), slog.String("error", err.Error()))
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.cur != c || seq <= b.seen {
		return
	}
	b.seen = seq
	if e == nil {
		return
	}
	if ch := b.channels[e.Channel]; ch != nil {
		b.deliver(ch, e)
	}
}

// control handles a status message of consumer c: a heartbeat, a flow
// control request, or word that the consumer is gone.
func (b *Broker) control(c *consumer, m *nats.Msg, status string) {
	if status != "100" {
		b.askReset(c, status+" "+m.Header.Get("Description"))
		return
	}
	if m.Reply != "" {
		m.Respond(nil) // flow control
	}
	if stalled := m.Header.Get("Nats-Consumer-Stalled"); stalled != "" {
		b.nc.Publish(stalled, nil)
	}
	if last := m.Header.Get("Nats-Last-Consumer"); last != "" {
		if n, err := strconv.ParseUint(last, 10, 64); err == nil && n != c.dseq {
			b.askReset(c, fmt.Sprintf("heartbeat says consumer sequence %d, received %d", n, c.dseq))
		}
	}
}

// repair runs when consumer c skips from stream sequence prev to seq: the
// events in between left the stream before c read them. Each channel that
// lost events gets a reset, positioned just before seq.
func (b *Broker) repair(c *consumer, prev, seq uint64) {
	st := b.st.Load()
	b.mu.Lock()
	chans := make([]*channel, 0, len(b.channels))
	for _, ch := range b.channels {
		chans = append(chans, ch)
	}
	b.mu.Unlock()
	if st == nil || st.ids.tag != c.ids.tag {
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.pubWait)
	defer cancel()
	lost := make([]bool, len(chans))
	var wg sync.WaitGroup
	sem := make(chan struct{}, checkParallel)
	for i, ch := range chans {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			gone, err := b.gone(ctx, st, ch.name, prev)
			// When it cannot tell, a reset is the safe answer.
			lost[i] = gone || err != nil
		})
	}
	wg.Wait()
	reset := st.position(seq - 1)
	n := 0
	b.mu.Lock()
	if b.cur == c {
		for i, ch := range chans {
			if lost[i] && b.channels[ch.name] == ch {
				b.deliver(ch, resetEvent(ch.name, reset))
				n++
			}
		}
	}
	b.mu.Unlock()
	b.log.LogAttrs(ctx, slog.LevelWarn, "natsbroker: events left the stream before this hub read them",
		slog.Uint64("after", prev), slog.Uint64("before", seq), slog.Int("channels_reset", n))
}
