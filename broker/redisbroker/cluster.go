package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
)

// Redis Cluster.
//
// With a *redis.ClusterClient, each channel lives on the shard that owns
// its hash slot: its keys (keysOf), and its sharded pub/sub channel, which
// the publish script writes with SPUBLISH. The broker holds one pub/sub
// connection per shard that has channels it subscribes, to the shard's
// master: a shard session. SSUBSCRIBE takes the channels of one slot per
// command, so the session subscribes each channel (with its twin) on its
// own, and rebuilds everything itself when the connection fails, rather
// than let go-redis subscribe all channels again in one command.
//
// Each channel is numbered on its own (seq = max(last+1, TIME) of its
// shard), so a session catches up per channel: when a channel is
// confirmed on a new connection, the broker reads what it missed from the
// channel's stream, holding back its live messages meanwhile, then
// delivers both in order. Before that it asks lost.lua whether the
// channel's history went back behind what the broker delivered, as after
// the failover of a master whose replica lacked the last events: the
// subscribers then get an ssehub.ResetType event, then the events
// published since.
//
// When a session fails (its master died, or a slot moved: an error or
// MOVED reply, or a sunsubscribe the broker did not ask for), the broker
// reloads the cluster's slot map and moves each channel to the session of
// its slot's master now, after a backoff.

// clusterSyncTimeout bounds the catch-up of one channel.
const clusterSyncTimeout = 10 * time.Second

// shard is the pub/sub session of one master. Guarded by Broker.mu; the
// SSUBSCRIBE and SUNSUBSCRIBE commands on ps by Broker.cmdMu.
type shard struct {
	addr    string
	node    *redis.Client
	chans   map[*channel]struct{}
	ps      *redis.PubSub         // the current connection, or nil
	pending map[string][]*channel // per name, the replies awaited: a channel, asked, or nil for SUNSUBSCRIBE
	canary  string                // the session's canary channel, in the slot of one of its channels
	token   string                // part of every canary name of the shard
	up      bool                  // every channel of the session was confirmed
	downErr error                 // why the last attempt to subscribe failed
	lost    bool                  // a session failed since the shard was last up
	// Watchdog state, as for the single connection on one Redis.
	canaryWant, canaryGot uint64
	canarySent            time.Time
}

// asked stands in pending for an SSUBSCRIBE of a twin or a canary.
var asked = &channel{}

// isShardCanary reports whether name is the canary channel of a shard
// session.
func (b *Broker) isShardCanary(name string) bool {
	if b.cluster == nil {
		return false
	}
	rest, ok := strings.CutPrefix(name, b.prefix+"{")
	return ok && strings.Contains(rest, "}canary#")
}

// shardOverdue reports whether the shard's last canary has not come back
// within an interval. b.mu must be held.
func (b *Broker) shardOverdue(sh *shard) bool {
	return b.canaryEvery > 0 && sh.canaryWant > sh.canaryGot && time.Since(sh.canarySent) >= b.canaryEvery
}

// subscribeCluster is Subscribe on Redis Cluster.
func (b *Broker) subscribeCluster(ctx context.Context, name string, deliver func(*ssehub.Event)) (func(), error) {
	node, err := b.cluster.MasterForKey(ctx, name)
	if err != nil {
		return nil, unavailable(fmt.Sprintf("subscribe %q", name), err)
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
	ch := b.channels[name]
	var ps, fps *redis.PubSub
	if ch == nil {
		if sh := b.shards[node.Options().Addr]; sh != nil && sh.downErr != nil {
			err := sh.downErr
			b.mu.Unlock()
			b.cmdMu.Unlock()
			return nil, unavailable(fmt.Sprintf("subscribe %q", name), err)
		}
		ch = &channel{name: name, ready: make(chan struct{})}
		b.channels[name] = ch
		ps = b.place(ch, node)
		fps = b.fps
	}
	ch.subs = append(ch.subs, s)
	b.mu.Unlock()
	if fps != nil {
		if err := fps.Subscribe(context.WithoutCancel(ctx), name); err != nil {
			fps.Close()
		}
	}
	if ps != nil {
		if err := ps.SSubscribe(context.WithoutCancel(ctx), name, b.twin(name)); err != nil {
			ps.Close() // the session starts again and subscribes the channel
		}
	}
	b.cmdMu.Unlock()

	cancel := func() { b.unsubscribeCluster(ch, s) }
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

// place puts ch on the session of node, starting it when there is none,
// and returns the connection on which to subscribe ch now, if any. b.mu
// and b.cmdMu must be held.
func (b *Broker) place(ch *channel, node *redis.Client) *redis.PubSub {
	addr := node.Options().Addr
	sh := b.shards[addr]
	if sh == nil {
		sh = &shard{addr: addr, node: node, chans: map[*channel]struct{}{}, token: strconv.FormatUint(rand.Uint64(), 36)}
		if b.shards == nil {
			b.shards = map[string]*shard{}
		}
		b.shards[addr] = sh
		b.wg.Add(1)
		go b.runShard(sh)
	}
	sh.chans[ch] = struct{}{}
	b.dropHeld(ch)
	ch.shard, ch.confirmed, ch.syncing = sh, false, false
	if sh.ps == nil {
		return nil // the session subscribes it when it starts
	}
	sh.pending[ch.name] = append(sh.pending[ch.name], ch)
	sh.pending[b.twin(ch.name)] = append(sh.pending[b.twin(ch.name)], asked)
	return sh.ps
}

// unsubscribeCluster is unsubscribe on Redis Cluster.
func (b *Broker) unsubscribeCluster(ch *channel, s *sub) {
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	i := slices.Index(ch.subs, s)
	if i < 0 {
		b.mu.Unlock()
		return
	}
	ch.subs = slices.Delete(ch.subs, i, i+1)
	var ps, fps *redis.PubSub
	empty := false
	if len(ch.subs) == 0 && b.channels[ch.name] == ch {
		delete(b.channels, ch.name)
		b.dropHeld(ch)
		fps = b.fps
		sh := ch.shard
		delete(sh.chans, ch)
		if sh.ps != nil && !b.closed {
			ps = sh.ps
			sh.pending[ch.name] = append(sh.pending[ch.name], nil)
			sh.pending[b.twin(ch.name)] = append(sh.pending[b.twin(ch.name)], nil)
			empty = len(sh.chans) == 0
		}
	}
	b.mu.Unlock()
	if fps != nil {
		if err := fps.Unsubscribe(context.Background(), ch.name); err != nil {
			fps.Close()
		}
	}
	switch {
	case empty:
		// The session is no longer needed: it ends, and its shard with it.
		ps.Close()
	case ps != nil:
		if err := ps.SUnsubscribe(context.Background(), ch.name, b.twin(ch.name)); err != nil {
			ps.Close()
		}
	}
}

// runShard keeps the session of sh going while it has channels, moving
// them to their slot's master after a failure.
func (b *Broker) runShard(sh *shard) {
	defer b.wg.Done()
	delay := minBackoff
	wasUp := false
	for {
		started := time.Now()
		up, err := b.shardSession(sh)
		if b.isClosed() || b.dropShard(sh) {
			return
		}
		b.mu.Lock()
		if !up {
			sh.downErr = err
		}
		sh.lost = true
		b.mu.Unlock()
		b.metrics.BrokerError()
		switch {
		case up:
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: shard subscription lost; reconnecting",
				slog.String("shard", sh.addr), slog.String("error", err.Error()))
		case wasUp || delay == minBackoff:
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: cannot subscribe on a shard; retrying",
				slog.String("shard", sh.addr), slog.String("error", err.Error()))
		}
		wasUp = up
		if up && time.Since(started) > stableSession {
			delay = minBackoff
		} else {
			wait := delay/2 + rand.N(delay/2+1)
			delay = min(2*delay, maxBackoff)
			select {
			case <-b.done:
				return
			case <-time.After(wait):
			}
		}
		b.reroute(sh)
		if b.dropShard(sh) {
			return
		}
	}
}

// dropShard forgets sh when it has no channel left, and reports whether it
// did.
func (b *Broker) dropShard(sh *shard) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(sh.chans) > 0 {
		return false
	}
	if b.shards[sh.addr] == sh {
		delete(b.shards, sh.addr)
	}
	return true
}

// reroute reloads the cluster's slot map and moves the channels of sh
// whose slot has another master now to that master's session.
func (b *Broker) reroute(sh *shard) {
	ctx, cancel := context.WithTimeout(b.ctx, time.Second)
	defer cancel()
	// ForEachMaster reloads the slot map first.
	b.cluster.ForEachMaster(ctx, func(context.Context, *redis.Client) error { return nil })
	b.mu.Lock()
	chans := make([]*channel, 0, len(sh.chans))
	for ch := range sh.chans {
		chans = append(chans, ch)
	}
	b.mu.Unlock()
	moves := map[*channel]*redis.Client{}
	for _, ch := range chans {
		node, err := b.cluster.MasterForKey(ctx, ch.name)
		if err == nil && node.Options().Addr != sh.addr {
			moves[ch] = node
		}
	}
	if len(moves) == 0 {
		return
	}
	type subscription struct {
		ps   *redis.PubSub
		name string
	}
	var subs []subscription
	b.cmdMu.Lock()
	defer b.cmdMu.Unlock()
	b.mu.Lock()
	for ch, node := range moves {
		if ch.shard != sh || b.channels[ch.name] != ch {
			continue
		}
		delete(sh.chans, ch)
		if ps := b.place(ch, node); ps != nil {
			subs = append(subs, subscription{ps, ch.name})
		}
	}
	b.mu.Unlock()
	b.log.LogAttrs(ctx, slog.LevelInfo, "redisbroker: channels moved to another shard",
		slog.String("from", sh.addr), slog.Int("channels", len(moves)))
	for _, s := range subs {
		if err := s.ps.SSubscribe(context.WithoutCancel(ctx), s.name, b.twin(s.name)); err != nil {
			s.ps.Close()
		}
	}
}

// errNoChannels ends the session of a shard whose channels all left.
var errNoChannels = errors.New("no channel left on the shard")

// shardSession subscribes the channels of sh on a new connection to its
// master, then delivers until the connection fails. Each channel catches
// up on its own once confirmed (syncChannel). It reports whether every
// channel was confirmed.
func (b *Broker) shardSession(sh *shard) (up bool, err error) {
	ctx := b.ctx
	ps := sh.node.SSubscribe(ctx)
	defer b.endShardSession(sh, ps)

	b.cmdMu.Lock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.cmdMu.Unlock()
		return false, ssehub.ErrClosed
	}
	if len(sh.chans) == 0 {
		b.mu.Unlock()
		b.cmdMu.Unlock()
		return false, errNoChannels
	}
	sh.ps = ps
	sh.pending = map[string][]*channel{}
	sh.canaryGot = sh.canaryWant
	expect := map[string]bool{}
	var groups [][]string
	for ch := range sh.chans {
		if len(groups) == 0 {
			// A canary in the slot of a channel of the session travels
			// through the shard.
			sh.canary = b.prefix + "{" + ch.name + "}canary#" + sh.token
			sh.pending[sh.canary] = []*channel{asked}
			expect[sh.canary] = true
			groups = append(groups, []string{sh.canary})
		}
		b.dropHeld(ch)
		ch.confirmed, ch.syncing = false, false
		ch.foreign = foreignState{ingesting: ch.foreign.ingesting, gone: ch.foreign.gone}
		delete(b.holding, ch)
		sh.pending[ch.name] = []*channel{ch}
		sh.pending[b.twin(ch.name)] = []*channel{asked}
		expect[ch.name] = true
		groups = append(groups, []string{ch.name, b.twin(ch.name)})
	}
	b.mu.Unlock()
	for _, g := range groups {
		if err = ps.SSubscribe(ctx, g...); err != nil {
			break
		}
	}
	b.cmdMu.Unlock()
	if err != nil {
		return false, err
	}

	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return up, err
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			b.mu.Lock()
			ok := b.confirmShard(sh, ps, m)
			if m.Kind == "ssubscribe" {
				delete(expect, m.Channel)
			}
			if !up && len(expect) == 0 {
				up = true
				sh.up, sh.downErr = true, nil
				if sh.lost {
					sh.lost = false
					b.metrics.BrokerReconnected()
				}
			}
			b.mu.Unlock()
			if !ok {
				return up, fmt.Errorf("the shard unsubscribed %q: its slot moved", m.Channel)
			}
		case *redis.Message:
			h := b.decode(m)
			b.mu.Lock()
			b.receiveShard(sh, h)
			b.mu.Unlock()
		}
	}
}

// endShardSession forgets ps as the connection of sh and closes it.
func (b *Broker) endShardSession(sh *shard, ps *redis.PubSub) {
	b.cmdMu.Lock()
	b.mu.Lock()
	if sh.ps == ps {
		sh.ps, sh.pending, sh.up = nil, nil, false
		for ch := range sh.chans {
			b.dropHeld(ch)
			ch.confirmed, ch.syncing = false, false
		}
	}
	b.mu.Unlock()
	b.cmdMu.Unlock()
	ps.Close()
}

// confirmShard matches a reply to SSUBSCRIBE or SUNSUBSCRIBE with what it
// was sent for, and starts the catch-up of a channel confirmed. It reports
// false for a sunsubscribe the broker did not ask for: the server dropped
// the channel because its slot moved. b.mu must be held.
func (b *Broker) confirmShard(sh *shard, ps *redis.PubSub, m *redis.Subscription) bool {
	q := sh.pending[m.Channel]
	if len(q) == 0 {
		return m.Kind != "sunsubscribe"
	}
	ch := q[0]
	if len(q) == 1 {
		delete(sh.pending, m.Channel)
	} else {
		sh.pending[m.Channel] = q[1:]
	}
	if m.Kind != "ssubscribe" {
		return ch == nil
	}
	if ch == nil || ch == asked || b.channels[ch.name] != ch || ch.shard != sh {
		return true
	}
	b.dropHeld(ch)
	ch.confirmed, ch.syncing = true, true
	go b.sync(ch.name)
	go b.syncChannel(sh, ps, ch)
	return true
}

// dropHeld forgets the messages ch holds back. b.mu must be held.
func (b *Broker) dropHeld(ch *channel) {
	b.heldBytes -= ch.heldBytes
	ch.held, ch.heldBytes = nil, 0
}

// receiveShard delivers a live message of sh's session. b.mu must be held.
func (b *Broker) receiveShard(sh *shard, h heldEvent) {
	if b.closed {
		return
	}
	if h.canary {
		if h.channel == sh.canary {
			sh.canaryGot = max(sh.canaryGot, h.token)
		}
		return
	}
	if ch := b.channels[h.channel]; ch != nil && ch.syncing {
		n := h.size()
		if len(ch.held) >= maxHeld || b.heldBytes+n > maxHeldBytes {
			// Too far behind: catch up again on a new connection.
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: too many messages while catching up; reconnecting",
				slog.String("shard", sh.addr), slog.String("channel", ch.name))
			go sh.ps.Close()
			return
		}
		ch.held = append(ch.held, h)
		ch.heldBytes += n
		b.heldBytes += n
		return
	}
	b.receive(h)
}

// syncChannel runs once ch is confirmed on the connection ps of sh: the
// first time, it learns the channel's head, from which a later catch-up
// starts; afterwards, it delivers what ch missed while it had no
// connection, or a reset when that is gone, then the messages held back
// meanwhile.
func (b *Broker) syncChannel(sh *shard, ps *redis.PubSub, ch *channel) {
	ctx, cancel := context.WithTimeout(b.ctx, clusterSyncTimeout)
	defer cancel()
	b.mu.Lock()
	synced := ch.synced
	from := max(ch.last, ch.base)
	isEvent := ch.last > 0 && ch.last >= ch.base
	b.mu.Unlock()
	var (
		head  uint64
		c     catchUp
		err   error
		heads []uint64
	)
	if !synced {
		heads, err = b.channelHeads(ctx, []string{ch.name})
		if err == nil {
			head = heads[0]
		}
	} else {
		c, err = b.catchUpChannel(ctx, ch.name, from, isEvent)
	}

	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.channels[ch.name] != ch || ch.shard != sh || sh.ps != ps || !ch.syncing {
		return // a later session does it again
	}
	if err != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "redisbroker: cannot catch up with a channel; reconnecting",
			slog.String("channel", ch.name), slog.String("error", err.Error()))
		go ps.Close()
		return
	}
	if !synced {
		ch.base, ch.synced = head, true
	}
	if c.reset != nil {
		b.log.LogAttrs(ctx, slog.LevelWarn, "redisbroker: events missed on a channel are gone; sending a reset",
			slog.String("channel", ch.name), slog.Bool("history_went_back", c.lowered))
		// The reset's Seq is the position the channel resumes from, which
		// the hub gives the streams over several channels: it goes out
		// whatever the last seq delivered.
		ch.last = c.reset.Seq
		for _, s := range ch.subs {
			s.deliver(c.reset)
		}
	}
	for _, e := range c.events {
		b.deliver(ch, e)
	}
	held := ch.held
	b.dropHeld(ch)
	ch.syncing = false
	for _, h := range held {
		b.receive(h)
	}
	if !ch.readyDone {
		ch.readyDone = true
		close(ch.ready)
	}
}

// catchUp is what a channel missed: events, after a reset when some are
// gone.
type catchUp struct {
	reset   *ssehub.Event
	lowered bool   // the history went back: the channel resumes after from
	from    uint64 // where the events start
	events  []*ssehub.Event
}

// catchUpChannel reads what channel name missed after position from: the
// seq of the last event delivered when isEvent, else a head.
func (b *Broker) catchUpChannel(ctx context.Context, name string, from uint64, isEvent bool) (catchUp, error) {
	c := catchUp{from: from}
	if from > 0 {
		k := b.keysOf(name)
		flag := "0"
		if isEvent && b.size > 0 {
			flag = "1"
		}
		res, err := lostScript.Run(ctx, b.client, []string{k.state, k.stream, k.evicted, k.active}, name, from, flag).Int64Slice()
		if err != nil {
			return c, unavailable("catch up", err)
		}
		if len(res) == 2 && res[0] == 1 {
			c.lowered, c.from = true, uint64(res[1])
		}
	}
	r, err := b.resolve(ctx, []string{name}, "", []uint64{c.from})
	if err != nil {
		return c, err
	}
	head := r.heads[0]
	if r.ok[0] && b.size > 0 {
		err := b.readPages(ctx, []string{name}, []uint64{c.from}, []uint64{head}, func(e *ssehub.Event) error {
			c.events = append(c.events, e)
			return nil
		})
		switch {
		case errors.Is(err, errTrimmed):
			c.events = nil
			r.ok[0] = false
		case err != nil:
			return c, err
		}
	}
	switch {
	case !r.ok[0]:
		// Trimmed meanwhile: nothing to replay, resume from the head.
		c.lowered, c.events = false, nil
		c.reset = ssehub.NewEvent(name, FormatSeq(head), ssehub.ResetType, []byte("{}"), 0, head, time.Now())
	case c.lowered:
		c.reset = ssehub.NewEvent(name, FormatSeq(c.from), ssehub.ResetType, []byte("{}"), 0, c.from, time.Now())
	}
	return c, nil
}

// channelHeads returns the head of each channel, each read in its own
// slot.
func (b *Broker) channelHeads(ctx context.Context, channels []string) ([]uint64, error) {
	heads := make([]uint64, len(channels))
	err := eachChannel(len(channels), func(i int) error {
		r, err := b.resolve(ctx, channels[i:i+1], "", nil)
		if err == nil {
			heads[i] = r.heads[0]
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return heads, nil
}

// maxParallelSlots bounds the script calls a replay or head over several
// channels runs at once, one per channel, each on its channel's master.
const maxParallelSlots = 16

// eachChannel calls f for 0 to n-1, up to maxParallelSlots at once, and
// returns the first error.
func eachChannel(n int, f func(i int) error) error {
	if n == 1 {
		return f(0)
	}
	errs := make([]error, n)
	sem := make(chan struct{}, maxParallelSlots)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = f(i)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// watchCluster is the watchdog on Redis Cluster: every interval it
// publishes a canary through each shard's session and rebuilds a session
// whose previous canary has not come back, or nobody received.
func (b *Broker) watchCluster() {
	defer b.wg.Done()
	tick := time.NewTicker(b.canaryEvery)
	defer tick.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-tick.C:
		}
		type probe struct {
			sh     *shard
			ps     *redis.PubSub
			canary string
			token  uint64
		}
		var probes []probe
		b.mu.Lock()
		for _, sh := range b.shards {
			if !sh.up || sh.ps == nil {
				continue
			}
			if b.shardOverdue(sh) {
				b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: shard subscription stopped delivering; rebuilding it",
					slog.String("shard", sh.addr))
				go sh.ps.Close()
				continue
			}
			if sh.canaryWant > sh.canaryGot {
				continue
			}
			sh.canaryWant++
			sh.canarySent = time.Now()
			probes = append(probes, probe{sh, sh.ps, sh.canary, sh.canaryWant})
		}
		b.mu.Unlock()
		for _, p := range probes {
			ctx, cancel := context.WithTimeout(context.Background(), b.canaryEvery)
			n, err := p.sh.node.SPublish(ctx, p.canary, strconv.FormatUint(p.token, 10)).Result()
			cancel()
			switch {
			case err != nil:
				// The session fails by itself if the shard is gone.
				b.mu.Lock()
				p.sh.canaryGot = max(p.sh.canaryGot, p.token)
				b.mu.Unlock()
			case n == 0:
				b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: a shard lost the subscription; rebuilding it",
					slog.String("shard", p.sh.addr))
				p.ps.Close()
			}
		}
	}
}

// pingCluster pings the masters of the shard sessions, or, before the
// first Subscribe, every master: the hub depends on those, and a node
// that failed over is no longer one of them.
func (b *Broker) pingCluster(ctx context.Context) error {
	b.mu.Lock()
	nodes := make([]*redis.Client, 0, len(b.shards))
	for _, sh := range b.shards {
		nodes = append(nodes, sh.node)
	}
	b.mu.Unlock()
	if len(nodes) == 0 {
		if err := b.cluster.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		}); err != nil {
			return unavailable("ping", err)
		}
		return nil
	}
	for _, n := range nodes {
		if err := n.Ping(ctx).Err(); err != nil {
			return unavailable("ping "+n.Options().Addr, err)
		}
	}
	return nil
}

// checkCluster is the part of Check that concerns the shard sessions.
// b.mu must be held.
func (b *Broker) checkCluster() error {
	for _, sh := range b.shards {
		switch {
		case !sh.up && sh.downErr != nil:
			return unavailable("subscribe on shard "+sh.addr, sh.downErr)
		case !sh.up:
			return fmt.Errorf("%w: shard %s: not subscribed yet", ssehub.ErrUnavailable, sh.addr)
		case b.shardOverdue(sh):
			return fmt.Errorf("%w: shard %s: subscription stopped delivering", ssehub.ErrUnavailable, sh.addr)
		}
	}
	return nil
}

// ChannelOrder implements ssehub.ChannelOrderer: on Redis Cluster, each
// channel is numbered on its own.
func (b *Broker) ChannelOrder() bool { return b.cluster != nil }

// positions returns the cursor of channels at heads: for one channel, the
// id of its position as an event id; for several, ssehub.FormatPositions.
func positions(channels []string, heads []uint64) ssehub.Cursor {
	c := ssehub.Cursor{Channels: make(map[string]uint64, len(channels))}
	for i, name := range channels {
		c.Channels[name] = heads[i]
		c.Seq = max(c.Seq, heads[i])
	}
	if len(c.Channels) == 1 {
		c.ID = FormatSeq(c.Seq)
	} else {
		c.ID = ssehub.FormatPositions(c.Channels)
	}
	return c
}

// replayCluster is Replay on Redis Cluster, channel by channel, each in its
// own slot. For one channel, lastEventID is an event's id (the broker's or
// a publisher's); for several, an id ssehub.FormatPositions made for
// exactly those channels.
func (b *Broker) replayCluster(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error) {
	channels = slices.Compact(slices.Sorted(slices.Values(channels)))
	var pos map[string]uint64
	known := true
	if len(channels) > 1 {
		pos, known = ssehub.ParsePositions(lastEventID, channels)
	}
	from := make([]uint64, len(channels))
	heads := make([]uint64, len(channels))
	ok := make([]bool, len(channels))
	err := eachChannel(len(channels), func(i int) error {
		var r bounds
		var err error
		if pos != nil {
			r, err = b.resolve(ctx, channels[i:i+1], "", []uint64{pos[channels[i]]})
		} else {
			r, err = b.resolve(ctx, channels[i:i+1], lastEventID, nil)
		}
		if err != nil {
			return err
		}
		heads[i] = r.heads[0]
		if pos != nil {
			from[i], ok[i] = pos[channels[i]], r.ok[0]
		} else {
			from[i], ok[i] = r.start, r.ok[0] && r.found
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, ssehub.ErrUnavailable) {
			b.metrics.BrokerError()
		}
		return ssehub.Cursor{}, err
	}
	known = known && !slices.Contains(ok, false)
	head := positions(channels, heads)
	if !known {
		return head, fmt.Errorf("%w: %q", ssehub.ErrUnknownID, lastEventID)
	}
	if b.size <= 0 {
		return head, nil
	}
	err = b.readPages(ctx, channels, from, heads, fn)
	if errors.Is(err, errTrimmed) {
		return head, fmt.Errorf("%w: %q: %w", ssehub.ErrUnknownID, lastEventID, err)
	}
	return head, err
}

// Messages of other publishers on Redis Cluster.
//
// invenio-sse and flask-sse publish with plain PUBLISH, which a cluster
// broadcasts to every node. The broker subscribes the names of its channels
// with plain SUBSCRIBE on one connection to any node, and takes what comes
// there into the history as on one Redis (foreign.go); the notices come on
// the channel's twin, through the shard session. The two connections do
// not keep each other's order: a notice may come before the message it is
// about, which the broker then drops when it comes.

// startForeign starts the plain subscription. b.mu must be held.
func (b *Broker) startForeign() {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		delay := minBackoff
		for {
			started := time.Now()
			err := b.foreignSession()
			if b.isClosed() {
				return
			}
			b.log.LogAttrs(context.Background(), slog.LevelDebug, "redisbroker: subscription to other publishers lost; reconnecting",
				slog.String("error", err.Error()))
			if time.Since(started) > stableSession {
				delay = minBackoff
			}
			wait := delay/2 + rand.N(delay/2+1)
			delay = min(2*delay, maxBackoff)
			select {
			case <-b.done:
				return
			case <-time.After(wait):
			}
		}
	}()
}

// foreignSession subscribes the channel names with plain SUBSCRIBE and
// holds the messages of other publishers that come, until the connection
// fails.
func (b *Broker) foreignSession() error {
	ctx := b.ctx
	// Any node will do, as PUBLISH reaches them all; another one is tried
	// after a failure.
	var (
		nodesMu sync.Mutex
		nodes   []*redis.Client
	)
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	b.cluster.ForEachShard(lctx, func(_ context.Context, c *redis.Client) error {
		nodesMu.Lock()
		nodes = append(nodes, c)
		nodesMu.Unlock()
		return nil
	})
	cancel()
	if len(nodes) == 0 {
		return errors.New("no node of the cluster is known")
	}
	ps := nodes[rand.N(len(nodes))].Subscribe(ctx)
	defer func() {
		b.cmdMu.Lock()
		b.mu.Lock()
		if b.fps == ps {
			b.fps = nil
		}
		b.mu.Unlock()
		b.cmdMu.Unlock()
		ps.Close()
	}()
	b.cmdMu.Lock()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		b.cmdMu.Unlock()
		return ssehub.ErrClosed
	}
	b.fps = ps
	names := make([]string, 0, len(b.channels))
	for name := range b.channels {
		names = append(names, name)
	}
	b.mu.Unlock()
	var err error
	if len(names) > 0 {
		err = ps.Subscribe(ctx, names...)
	}
	b.cmdMu.Unlock()
	if err != nil {
		return err
	}
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			return err
		}
		m, ok := msg.(*redis.Message)
		if !ok {
			continue
		}
		e, err := decodeEnvelope(m.Channel, []byte(m.Payload))
		switch {
		case errors.Is(err, errNoEvent):
			continue
		case err != nil:
			b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: dropped a message that is not a valid envelope",
				slog.String("channel", m.Channel), slog.String("error", err.Error()))
			continue
		case e.Seq != 0:
			continue // an envelope of a hub, not on this cluster's sharded channels
		}
		b.mu.Lock()
		if ch := b.channels[m.Channel]; ch != nil && !b.closed {
			f := &ch.foreign
			if i := indexPayload(f.early, m.Payload); i >= 0 {
				// Its notice came first, and the event was delivered.
				f.early = append(f.early[:i], f.early[i+1:]...)
			} else {
				b.holdForeign(ch, m.Payload, e)
			}
		}
		b.mu.Unlock()
	}
}

// refused reports whether err is a Redis reply that turned the command
// away before running it: the cluster is down or the slot is elsewhere
// (after go-redis's redirections ran out), a node is loading, or a
// replica refuses writes. Nothing was published then.
func refused(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return false
	}
	code, _, _ := strings.Cut(re.Error(), " ")
	switch code {
	case "CLUSTERDOWN", "TRYAGAIN", "MOVED", "ASK", "LOADING", "READONLY", "MASTERDOWN":
		return true
	}
	return false
}
