package redisbroker

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ssehub/ssehub"
)

// Redis replicates asynchronously: when Sentinel promotes a replica, the
// events the old master acknowledged but had not sent to it yet are gone,
// and the new master's history went backwards. The broker notices when
// its subscription connects again: it asks Redis, with rewind.lua, about
// the last event it delivered on each channel it subscribes and the last
// one it published on each channel (published). An event that is neither
// in the channel's stream nor trimmed from it was lost. rewind.lua then
// marks the channel's history as trimmed up to that event, so that a
// resume from before it reads as unknown and gets a reset, and sends the
// notice "L<seq>" on the channel's twin for the other hubs. Subscribers
// of the channel get a reset, here and on every hub whose subscribers had
// not seen that seq (receiveLost), then the events that follow.

// Bounds of the published record: a publish is remembered for
// publishedWindow, which replication takes far less than, and for at most
// maxPublished channels.
const (
	publishedWindow = time.Minute
	maxPublished    = 4096
)

// publishedRecord is, per channel, the seq of the last event the broker
// published on it recently. Once a connection to Redis failed it is
// frozen: later publishes, which may go to a new master, add channels but
// do not replace the seqs from before, which are the ones to check.
type publishedRecord struct {
	mu     sync.Mutex
	last   map[string]uint64
	frozen bool
}

// note records that seq was published on channel.
func (p *publishedRecord) note(channel string, seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.noteLocked(channel, seq)
}

func (p *publishedRecord) noteLocked(channel string, seq uint64) {
	if p.last == nil {
		p.last = map[string]uint64{}
	}
	prev, ok := p.last[channel]
	if ok && p.frozen {
		return
	}
	if !ok && len(p.last) >= maxPublished {
		old := uint64(time.Now().Add(-publishedWindow).UnixMicro())
		for c, s := range p.last {
			if s < old {
				delete(p.last, c)
			}
		}
		if len(p.last) >= maxPublished {
			// NOTE(sentinel): a loss on a channel dropped here is found only
			// by the brokers that subscribe it.
			for c := range p.last {
				delete(p.last, c)
				break
			}
		}
	}
	p.last[channel] = max(prev, seq)
}

// freeze keeps the seqs recorded so far until the next take.
func (p *publishedRecord) freeze() {
	p.mu.Lock()
	p.frozen = true
	p.mu.Unlock()
}

// isFrozen reports whether a connection failed since the last take.
func (p *publishedRecord) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

// take returns the record, forgets it and thaws it.
func (p *publishedRecord) take() map[string]uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.last
	p.last, p.frozen = nil, false
	return m
}

// restore puts back what take returned, frozen, when it could not be
// checked.
func (p *publishedRecord) restore(m map[string]uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.frozen = false
	for c, s := range m {
		p.noteLocked(c, s)
	}
	p.frozen = true
}

// dials returns how many connections the client has tried to open.
func (b *Broker) dials() uint32 { return b.client.PoolStats().Misses }

// notePublished records that seq was published on channel. When the
// client opened a connection since dials, as go-redis does by itself when
// one breaks, the publish may have gone to a new master: what was
// published before is checked at once.
func (b *Broker) notePublished(ctx context.Context, channel string, seq uint64, dials uint32) {
	if b.cluster != nil {
		return // each channel checks its own history (lost.lua)
	}
	if b.dials() == dials {
		b.published.note(channel, seq)
		return
	}
	b.published.freeze()
	b.published.note(channel, seq)
	// The publish happened: a failed check is tried again before the next.
	b.checkPublished(ctx)
}

// checkPublished checks the record of a broker whose connection failed
// since it was last checked, before a publish: a hub that publishes on a
// channel without subscribing it learns that way of its lost publishes.
// Hubs on the channel hear of the loss on its twin.
func (b *Broker) checkPublished(ctx context.Context) error {
	if b.cluster != nil {
		return nil // each channel checks its own history (lost.lua)
	}
	if !b.published.isFrozen() || !b.checking.TryLock() {
		return nil
	}
	defer b.checking.Unlock()
	pub := b.published.take()
	b.mu.Lock()
	hi := b.seen
	b.mu.Unlock()
	known := make([]knownSeq, 0, len(pub))
	for c, seq := range pub {
		known = append(known, knownSeq{c, seq})
		hi = max(hi, seq)
	}
	if _, err := b.rewind(ctx, known, hi); err != nil {
		b.published.restore(pub)
		return err
	}
	return nil
}

// checkLost runs rewind for known, the last seqs delivered on channels,
// and for what the broker published lately, and raises the counter to hi
// at least.
func (b *Broker) checkLost(ctx context.Context, known []knownSeq, hi uint64) (map[string]uint64, error) {
	b.checking.Lock()
	defer b.checking.Unlock()
	pub := b.published.take()
	for c, seq := range pub {
		known = append(known, knownSeq{c, seq})
		hi = max(hi, seq)
	}
	if len(known) == 0 && hi == 0 {
		return nil, nil
	}
	lost, err := b.rewind(ctx, known, hi)
	if err != nil {
		b.published.restore(pub)
		return nil, err
	}
	return lost, nil
}

// knownSeq is the highest seq a broker knows was issued on a channel.
type knownSeq struct {
	channel string
	seq     uint64
}

// rewind runs rewind.lua for the channels in known and raises the counter
// to hi. It returns the channels that lost the event named, with the
// highest such seq.
func (b *Broker) rewind(ctx context.Context, known []knownSeq, hi uint64) (map[string]uint64, error) {
	history := "0"
	if b.size > 0 {
		history = "1"
	}
	lost := map[string]uint64{}
	for i := 0; i == 0 || i < len(known); i += syncBatch {
		part := known[i:min(i+syncBatch, len(known))]
		keys := []string{b.stateKey, b.activeKey, b.evictedKey, b.lostKey}
		args := []any{hi, history, b.prefix, b.ageMicros()}
		for _, k := range part {
			keys = append(keys, b.keysOf(k.channel).stream)
			args = append(args, k.channel, k.seq)
		}
		res, err := rewindScript.Run(ctx, b.client, keys, args...).Int64Slice()
		if err != nil {
			return nil, unavailable("check for lost events", err)
		}
		if len(res) != 1+len(part) {
			return nil, fmt.Errorf("redisbroker: rewind script returned %d values for %d channels", len(res), len(part))
		}
		if res[0] == 1 {
			b.log.LogAttrs(ctx, slog.LevelWarn, "redisbroker: Redis had issued fewer sequence numbers than this broker saw; raised its counter",
				slog.String("seq", FormatSeq(hi)))
		}
		for j, k := range part {
			if res[1+j] == 1 {
				lost[k.channel] = max(lost[k.channel], k.seq)
			}
		}
	}
	for name, seq := range lost {
		b.log.LogAttrs(ctx, slog.LevelWarn, "redisbroker: Redis lost events of a channel, as after a failover to a replica that lacked them",
			slog.String("channel", name), slog.String("lost_up_to", FormatSeq(seq)))
	}
	return lost, nil
}

// receiveLost handles the notice that a channel lost its events up to
// seq: its subscribers get a reset unless they saw seq or a later
// loss already. b.mu must be held.
func (b *Broker) receiveLost(ch *channel, seq uint64) {
	if ch == nil || seq <= ch.told {
		return
	}
	ch.told = seq
	b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: another hub found lost events of a channel; sending a reset",
		slog.String("channel", ch.name), slog.String("lost_up_to", FormatSeq(seq)))
	b.deliver(ch, ssehub.NewEvent(ch.name, FormatSeq(max(seq, ch.last)), ssehub.ResetType, []byte("{}"), 0, 0, time.Now()))
}
