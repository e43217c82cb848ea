package redisbroker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
)

// Reconnection backoff: it doubles from minBackoff up to maxBackoff, with
// jitter, so that many hubs do not reconnect in step after an outage.
const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// A session that lasted less than this did not prove the connection
	// healthy, so the next attempt still backs off.
	stableSession = 5 * time.Second
	// maxHeld and maxHeldBytes bound the messages one broker keeps back
	// while a new connection catches up with what the old one missed;
	// past either, the connection starts over, and its catch-up reads the
	// streams again.
	maxHeld = 100_000
	// syncBatch is how many channels one catch-up script reads.
	syncBatch = 100
)

// maxHeldBytes: see maxHeld. A variable for tests.
var maxHeldBytes = 64 << 20

// Subscribe implements ssehub.Broker. All channels share the broker's one
// pub/sub connection; the first subscription of a channel subscribes it in
// Redis and the last one to be cancelled unsubscribes it. Subscribe returns
// once Redis has confirmed the subscription. While Redis is known to be
// unreachable it fails at once with an error wrapping
// ssehub.ErrUnavailable. deliver is called with the broker's lock held and
// must not call the Broker.
func (b *Broker) Subscribe(ctx context.Context, name string, deliver func(*ssehub.Event)) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.cluster != nil {
		return b.subscribeCluster(ctx, name, deliver)
	}
	s := &sub{deliver: deliver}
	b.cmdMu.Lock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.cmdMu.Unlock()
		return nil, ssehub.ErrClosed
	}
	b.start()
	if b.downErr != nil {
		err := b.downErr
		b.mu.Unlock()
		b.cmdMu.Unlock()
		return nil, unavailable(fmt.Sprintf("subscribe %q", name), err)
	}
	ch := b.channels[name]
	var ps *redis.PubSub
	if ch == nil {
		ch = &channel{name: name, ready: make(chan struct{})}
		b.channels[name] = ch
		if b.ps != nil {
			// Otherwise the next session subscribes it.
			ps = b.ps
			b.pending[name] = append(b.pending[name], ch)
		}
	}
	ch.subs = append(ch.subs, s)
	b.mu.Unlock()
	if ps != nil {
		if err := ps.Subscribe(context.WithoutCancel(ctx), name, b.twin(name)); err != nil {
			// The connection is broken; the next one subscribes the channel.
			ps.Close()
		}
	}
	b.cmdMu.Unlock()

	cancel := func() { b.unsubscribe(ch, s) }
	select {
	case <-ch.ready:
		return cancel, nil
	case <-ctx.Done():
		cancel()
		return nil, unavailable(fmt.Sprintf("subscribe %q", name), ctx.Err())
	case <-b.done:
		cancel()
		return nil, ssehub.ErrClosed
	}
}

// unsubscribe removes s from ch, and ch from Redis when s was its last
// subscription. It is safe to call more than once.
func (b *Broker) unsubscribe(ch *channel, s *sub) {
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	i := slices.Index(ch.subs, s)
	if i < 0 {
		b.mu.Unlock()
		return
	}
	ch.subs = slices.Delete(ch.subs, i, i+1)
	var ps *redis.PubSub
	if len(ch.subs) == 0 && b.channels[ch.name] == ch {
		delete(b.channels, ch.name)
		if b.ps != nil && !b.closed {
			ps = b.ps
			b.pending[ch.name] = append(b.pending[ch.name], nil)
		}
	}
	b.mu.Unlock()
	if ps != nil {
		if err := ps.Unsubscribe(context.Background(), ch.name, b.twin(ch.name)); err != nil {
			ps.Close()
		}
	}
}

// run keeps a session going until the broker closes, reconnecting with
// backoff.
func (b *Broker) run() {
	defer b.wg.Done()
	delay := minBackoff
	wasUp := false
	for {
		started := time.Now()
		up, err := b.session()
		if b.isClosed() {
			return
		}
		b.mu.Lock()
		if !up {
			b.downErr = err
		}
		b.lost = true
		b.mu.Unlock()
		// Redis may come back as another server (rewind.go).
		b.published.freeze()
		b.metrics.BrokerError()
		switch {
		case up:
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: subscription lost; reconnecting",
				slog.String("error", err.Error()))
		case wasUp || delay == minBackoff:
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: cannot subscribe; retrying",
				slog.String("error", err.Error()))
		}
		wasUp = up
		if up && time.Since(started) > stableSession {
			delay = minBackoff
			continue // a healthy connection broke: try again at once
		}
		wait := delay/2 + rand.N(delay/2+1)
		delay = min(2*delay, maxBackoff)
		select {
		case <-b.done:
			return
		case <-time.After(wait):
		}
	}
}

// session subscribes every channel on a new connection, catches up with
// what the previous connection missed, then delivers until the connection
// fails. It reports whether it got that far.
func (b *Broker) session() (up bool, err error) {
	ctx := b.ctx
	ps := b.client.Subscribe(ctx)
	defer b.endSession(ps)

	b.cmdMu.Lock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.cmdMu.Unlock()
		return false, ssehub.ErrClosed
	}
	b.ps = ps
	b.pending = map[string][]*channel{b.canary: {nil}}
	b.canaryGot = b.canaryWant // a canary of an earlier connection is not awaited
	expect := map[string]bool{b.canary: true}
	names := []string{b.canary}
	var behind []*channel // channels that were live: they may have missed events
	for name, ch := range b.channels {
		ch.confirmed = false
		ch.foreign = foreignState{ingesting: ch.foreign.ingesting, gone: ch.foreign.gone}
		delete(b.holding, ch)
		b.pending[name] = []*channel{ch}
		expect[name] = true
		names = append(names, name, b.twin(name))
		if ch.live {
			behind = append(behind, ch)
		}
	}
	b.mu.Unlock()
	err = ps.Subscribe(ctx, names...)
	b.cmdMu.Unlock()
	if err != nil {
		return false, err
	}

	var (
		held      []heldEvent
		heldBytes int
	)
	syncing := true
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return !syncing, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			b.mu.Lock()
			b.confirm(m)
			b.mu.Unlock()
			if !syncing || m.Kind != "subscribe" {
				continue
			}
			delete(expect, m.Channel)
			if len(expect) == 0 {
				if err := b.catchUp(ctx, behind, held); err != nil {
					return false, err
				}
				held, heldBytes, behind, syncing = nil, 0, nil, false
			}
		case *redis.Message:
			h := b.decode(m)
			if syncing {
				heldBytes += h.size()
				if len(held) >= maxHeld || heldBytes > maxHeldBytes {
					return false, errors.New("too many messages while catching up")
				}
				held = append(held, h)
				continue
			}
			b.mu.Lock()
			b.receive(h)
			b.mu.Unlock()
		}
	}
}

// endSession forgets ps as the current connection and closes it.
func (b *Broker) endSession(ps *redis.PubSub) {
	b.cmdMu.Lock()
	b.mu.Lock()
	if b.ps == ps {
		b.ps, b.pending, b.up = nil, nil, false
		for _, ch := range b.channels {
			ch.confirmed = false
		}
	}
	b.mu.Unlock()
	b.cmdMu.Unlock()
	ps.Close()
}

// confirm matches a reply to SUBSCRIBE or UNSUBSCRIBE with the channel it
// was sent for. b.mu must be held.
func (b *Broker) confirm(m *redis.Subscription) {
	q := b.pending[m.Channel]
	if len(q) == 0 {
		return
	}
	ch := q[0]
	if len(q) == 1 {
		delete(b.pending, m.Channel)
	} else {
		b.pending[m.Channel] = q[1:]
	}
	if m.Kind != "subscribe" || ch == nil || b.channels[ch.name] != ch {
		return
	}
	if !ch.live {
		// Its subscriptions are owed nothing issued before.
		ch.told = b.seen
	}
	ch.confirmed, ch.live = true, true
	// Learn the count of notices, to take foreign messages in (foreign.go).
	go b.sync(ch.name)
	if !ch.readyDone {
		ch.readyDone = true
		close(ch.ready)
	}
}

// size is about how many bytes h holds, for maxHeldBytes.
func (h heldEvent) size() int {
	n := len(h.channel) + len(h.payload) + 128
	if h.event != nil {
		n += len(h.event.Frame())
	}
	return n
}

// heldEvent is a message received on a channel, decoded.
type heldEvent struct {
	channel string
	event   *ssehub.Event // nil when it could not be decoded
	err     error
	// For a message on a channel's twin (foreign.go): its kind and notice
	// number. payload is the foreign message, of a notice or as received.
	twin    bool
	kind    int
	notice  uint64
	payload string
	// For a canary: its token, and the last seq issued when it was sent
	// (on one Redis).
	canary     bool
	token, seq uint64
}

// decode turns a pub/sub message into an event, outside the lock.
func (b *Broker) decode(m *redis.Message) heldEvent {
	h := heldEvent{channel: m.Channel}
	if m.Channel == b.canary || b.isShardCanary(m.Channel) {
		h.canary = true
		token, seq, _ := strings.Cut(m.Payload, " ")
		h.token, _ = strconv.ParseUint(token, 10, 64)
		h.seq, _ = strconv.ParseUint(seq, 10, 64)
		return h
	}
	if name, ok := b.twinOf(m.Channel); ok {
		h.channel, h.twin = name, true
		decodeTwin(&h, m.Payload)
		return h
	}
	h.event, h.err = decodeEnvelope(m.Channel, []byte(m.Payload))
	if h.err == nil && h.event.Seq == 0 {
		h.payload = m.Payload
	}
	return h
}

// receive delivers a live message. Messages on one connection arrive in
// the order Redis published them, across channels, so seen may advance to
// the seq of every own event and canary. b.mu must be held.
func (b *Broker) receive(h heldEvent) {
	if b.closed {
		return
	}
	if h.channel == b.canary {
		b.canaryGot = max(b.canaryGot, h.token)
		b.seen = max(b.seen, h.seq)
		return
	}
	ch := b.channels[h.channel]
	if h.twin {
		b.receiveTwin(ch, h)
		return
	}
	if ch != nil && ch.foreign.skipNext && (h.event == nil || h.event.Seq == 0) {
		// The flask-sse copy of an own event that came on the twin.
		ch.foreign.skipNext = false
		return
	}
	if errors.Is(h.err, errNoEvent) {
		return
	}
	if h.err != nil {
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: dropped a message that is not a valid envelope",
			slog.String("channel", h.channel), slog.String("error", h.err.Error()))
		return
	}
	b.seen = max(b.seen, h.event.Seq)
	switch {
	case ch == nil:
	case h.event.Seq == 0:
		// Another publisher's: into the history first (foreign.go).
		b.holdForeign(ch, h.payload, h.event)
	default:
		b.deliver(ch, h.event)
	}
}

// deliver passes e to the subscriptions of ch, once: an own event at or
// before the last one delivered is a duplicate from catching up. b.mu
// must be held.
func (b *Broker) deliver(ch *channel, e *ssehub.Event) {
	if e.Seq != 0 {
		if e.Seq <= ch.last {
			return
		}
		ch.last = e.Seq
	}
	for _, s := range ch.subs {
		s.deliver(e)
	}
}

// catchUp runs once a new connection has subscribed every channel: it
// reads from the streams what channels that were live before may have
// missed while no connection was subscribed, delivers it, then the
// messages held back meanwhile. A channel whose missed events are gone
// gets a reset event.
func (b *Broker) catchUp(ctx context.Context, behind []*channel, held []heldEvent) error {
	var (
		seen   uint64
		events []*ssehub.Event
		resets []*ssehub.Event
		lost   []string // channels whose missed events are gone
		// and their heads
		lostHeads []uint64
	)
	b.mu.Lock()
	prev := b.seen
	from := make([]uint64, len(behind))
	last := make([]uint64, len(behind))
	hi := prev
	var known []knownSeq
	for i, ch := range behind {
		ch.told = max(ch.told, ch.last)
		from[i], last[i] = max(ch.last, prev), ch.last
		hi = max(hi, ch.last)
		if ch.last > ch.checked {
			known = append(known, knownSeq{ch.name, ch.last})
		}
	}
	b.mu.Unlock()
	// Events this broker delivered or published that Redis lost, as after
	// a failover (rewind.go): their channels get a reset, then what
	// follows them.
	rewound, err := b.checkLost(ctx, known, hi)
	if err != nil {
		return err
	}
	var first []*ssehub.Event // resets of channels that lost events
	for i, ch := range behind {
		if k, ok := rewound[ch.name]; ok {
			from[i] = max(from[i], k)
		}
	}
	for i := 0; i == 0 || i < len(behind); i += syncBatch {
		part := behind[i:min(i+syncBatch, len(behind))]
		names := make([]string, len(part))
		for j, ch := range part {
			names[j] = ch.name
		}
		r, err := b.resolve(ctx, names, "", from[i:i+len(part)])
		if err != nil {
			return err
		}
		if seen == 0 {
			// Later batches may read further; live delivery covers the rest.
			seen = r.seq
		}
		for j, name := range names {
			ok := r.ok[j]
			if ok && b.size > 0 {
				var missed []*ssehub.Event
				err := b.readPages(ctx, names[j:j+1], from[i+j:i+j+1], r.heads[j:j+1], func(e *ssehub.Event) error {
					missed = append(missed, e)
					return nil
				})
				switch {
				case errors.Is(err, errTrimmed):
					ok = false // what it read is not all it missed
				case err != nil:
					return err
				default:
					events = append(events, missed...)
				}
			}
			if _, rew := rewound[name]; rew && ok {
				// What follows the lost events is all there.
				first = append(first, ssehub.NewEvent(name, FormatSeq(from[i+j]), ssehub.ResetType, []byte("{}"), 0, 0, time.Now()))
			}
			if !ok {
				lost = append(lost, name)
				lostHeads = append(lostHeads, r.heads[j])
			}
		}
	}
	if len(lost) > 0 {
		var err error
		if resets, err = b.resetEvents(ctx, lost, lostHeads); err != nil {
			return err
		}
	}
	slices.SortFunc(events, func(x, y *ssehub.Event) int { return cmp.Compare(x.Seq, y.Seq) })

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return ssehub.ErrClosed
	}
	// A channel cancelled and subscribed again meanwhile is another
	// channel: what the old one missed is not owed to it.
	owed := make(map[string]*channel, len(behind))
	for i, ch := range behind {
		ch.checked = max(ch.checked, last[i])
		if k, ok := rewound[ch.name]; ok {
			ch.told, ch.checked = max(ch.told, k), max(ch.checked, k)
		}
		if b.channels[ch.name] == ch {
			owed[ch.name] = ch
		}
	}
	for _, e := range first {
		if ch := owed[e.Channel]; ch != nil {
			b.deliver(ch, e)
		}
	}
	for _, e := range events {
		if ch := owed[e.Channel]; ch != nil {
			b.deliver(ch, e)
		}
	}
	for _, e := range resets {
		if ch := owed[e.Channel]; ch != nil {
			if e.Type == ssehub.ResetType {
				b.log.LogAttrs(ctx, slog.LevelWarn, "redisbroker: events missed while disconnected are gone; sending a reset",
					slog.String("channel", e.Channel))
			}
			b.deliver(ch, e)
		}
	}
	b.seen = max(b.seen, seen)
	b.up, b.downErr = true, nil
	if b.lost {
		b.lost = false
		b.metrics.BrokerReconnected()
	}
	for _, h := range held {
		b.receive(h)
	}
	if prev != 0 {
		b.log.LogAttrs(ctx, slog.LevelInfo, "redisbroker: subscription restored",
			slog.Int("channels", len(b.channels)), slog.Int("caught_up", len(events)), slog.Int("reset", len(resets)))
	}
	return nil
}

// resetEvents returns, for channels whose missed events are gone, a reset
// event each, followed by the channel's events that Redis still has. When
// Redis lost its data (it restarted without persistence), those are the
// events published since it came back, which the channel's subscribers
// have not seen either: the reset's id is the position just before them,
// so a client that reconnects after the reset resumes from there. When
// they are gone too (trimmed), the reset's id is the channel's head.
func (b *Broker) resetEvents(ctx context.Context, channels []string, heads []uint64) ([]*ssehub.Event, error) {
	from := uint64(0)
	if v, err := b.client.HGet(ctx, b.stateKey, "start").Uint64(); err == nil && v > 0 {
		from = v - 1
	}
	var out []*ssehub.Event
	for i := 0; i < len(channels); i += syncBatch {
		part := channels[i:min(i+syncBatch, len(channels))]
		var r bounds
		if from > 0 && b.size > 0 {
			pos := make([]uint64, len(part))
			for j := range pos {
				pos[j] = from
			}
			var err error
			if r, err = b.resolve(ctx, part, "", pos); err != nil {
				return nil, err
			}
		}
		for j, name := range part {
			var kept []*ssehub.Event
			if r.ok != nil && r.ok[j] {
				err := b.readPages(ctx, part[j:j+1], []uint64{from}, r.heads[j:j+1], func(e *ssehub.Event) error {
					kept = append(kept, e)
					return nil
				})
				if err != nil && !errors.Is(err, errTrimmed) {
					return nil, err
				}
				if err != nil {
					kept = nil
				}
			}
			if len(kept) == 0 {
				out = append(out, ssehub.NewEvent(name, FormatSeq(heads[i+j]), ssehub.ResetType, []byte("{}"), 0, 0, time.Now()))
				continue
			}
			out = append(out, ssehub.NewEvent(name, FormatSeq(from), ssehub.ResetType, []byte("{}"), 0, 0, time.Now()))
			out = append(out, kept...)
		}
	}
	return out, nil
}

// canaryOverdue reports whether the last canary has not come back within
// an interval. b.mu must be held.
func (b *Broker) canaryOverdue() bool {
	return b.canaryEvery > 0 && b.canaryWant > b.canaryGot && time.Since(b.canarySent) >= b.canaryEvery
}

// watch is the watchdog: every interval it publishes a canary on the
// broker's private channel and rebuilds the subscription when the previous
// one has not come back, or when Redis says nobody is subscribed to it.
func (b *Broker) watch() {
	defer b.wg.Done()
	tick := time.NewTicker(b.canaryEvery)
	defer tick.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-tick.C:
		}
		b.mu.Lock()
		ps, up := b.ps, b.up
		overdue, waiting := b.canaryOverdue(), b.canaryWant > b.canaryGot
		if up && !waiting {
			b.canaryWant++
			b.canarySent = time.Now()
		}
		token := b.canaryWant
		b.mu.Unlock()
		switch {
		case !up:
			continue
		case overdue:
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: subscription stopped delivering; rebuilding it")
			ps.Close()
			continue
		case waiting:
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), b.canaryEvery)
		n, err := canaryScript.Run(ctx, b.client, []string{b.stateKey}, b.canary, token).Int64()
		cancel()
		switch {
		case err != nil:
			// Redis is unreachable: the connection will fail by itself,
			// and Check reports it. Do not wait for this canary.
			b.mu.Lock()
			b.canaryGot = max(b.canaryGot, token)
			b.mu.Unlock()
		case n == 0:
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: Redis lost the subscription; rebuilding it")
			ps.Close()
		}
	}
}
