package redisbroker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/ssehub/ssehub"
)

// Messages of other publishers, and the channel's twin.
//
// invenio-sse and flask-sse PUBLISH straight onto a channel, past the
// publish script, so their messages reach every hub but no history. A hub
// that receives one holds it and asks the publish script to take it into
// the history ("i" mode). All the hubs on the channel ask; one succeeds.
// For that, each channel has a count of such notices in Redis, and the
// script takes a message in only from a hub that has seen every notice so
// far: two hubs that ask with the same count cannot both succeed, and a
// hub that has seen the notice of a message no longer holds it. The
// script then publishes the event, with its seq, on the channel's twin,
// "<prefix>#<channel>", as notice "I<n> <envelope>". Every hub delivers
// the event when the notice comes, and drops the message it held: so the
// event has one seq everywhere, is in the history, and comes in seq order
// with the hub's own events.
//
// A hub learns the count when it subscribes a channel: it publishes
// "S<n>" on the twin (syncScript), n being the count at that moment; every
// notice up to n was published before, so it has come through or was
// never owed. A message held longer than foreignHold (Redis does not
// answer, or no hub can take it in) is delivered as it is, without a seq,
// and its notice, should it come later, is not delivered again.
//
// The twin also carries the full envelope of events published in
// flask-sse's shape (Options.Envelope), which flask-sse's readers could
// not take with a "ssehub_seq" key in it: the script publishes the
// envelope on the twin, then the flask-sse message on the channel, one
// right after the other, so the next message on the channel after such an
// envelope is its copy, and is skipped.

const (
	// foreignHold bounds how long a message of another publisher waits to
	// be taken into the history before it is delivered without.
	foreignHold = 2 * time.Second
	// maxForeignHeld and maxForeignHeldBytes bound the messages a channel
	// holds; past them they are delivered at once, without a seq.
	maxForeignHeld      = 10_000
	maxForeignHeldBytes = 16 << 20
	// maxGone bounds the messages remembered as delivered without a seq.
	maxGone = 256
)

// foreignState is a channel's part in taking messages of other publishers
// into the history. Guarded by Broker.mu.
type foreignState struct {
	synced    bool   // notices is known
	notices   uint64 // the last notice seen
	ingesting bool   // a request to take in held[0] is under way
	skipNext  bool   // the next message is the flask-sse copy of an own event
	held      []foreignMsg
	heldBytes int          // of the payloads in held
	gone      []foreignMsg // delivered without a seq when held too long
	early     []foreignMsg // on Redis Cluster, messages whose notice came first (cluster.go)
}

type foreignMsg struct {
	payload string
	event   *ssehub.Event // as delivered without a seq
	at      time.Time
}

// Kinds of message on a twin.
const (
	twinNone   = iota
	twinOwn    // an own envelope; its flask-sse copy follows on the channel
	twinNotice // "I<n> <envelope>": a foreign message taken in
	twinSync   // "S<n>": the count of notices
	twinLost   // "L<seq>": the channel lost its events up to seq (rewind.go)
)

func (b *Broker) twin(name string) string { return b.keysOf(name).twin }

// decodeTwin fills h from a message on the twin of h.channel.
func decodeTwin(h *heldEvent, payload string) {
	switch {
	case strings.HasPrefix(payload, "{"):
		h.kind = twinOwn
		h.event, h.err = decodeOwn(h.channel, []byte(payload))
	case strings.HasPrefix(payload, "I"):
		h.kind = twinNotice
		n, env, _ := strings.Cut(payload[1:], " ")
		if h.notice, h.err = strconv.ParseUint(n, 10, 64); h.err != nil {
			return
		}
		var e envelope
		if h.err = json.Unmarshal([]byte(env), &e); h.err != nil {
			return
		}
		if e.Foreign == nil {
			h.err = errors.New("a notice without a foreign message")
			return
		}
		h.payload = *e.Foreign
		h.event, h.err = decodeOwn(h.channel, []byte(env))
	case strings.HasPrefix(payload, "S"):
		h.kind = twinSync
		h.notice, h.err = strconv.ParseUint(payload[1:], 10, 64)
	case strings.HasPrefix(payload, "L"):
		h.kind = twinLost
		h.notice, h.err = strconv.ParseUint(payload[1:], 10, 64)
	default:
		h.err = fmt.Errorf("unknown message %.40q on the twin", payload)
	}
}

// receiveTwin handles a message on the twin of a channel. b.mu must be
// held.
func (b *Broker) receiveTwin(ch *channel, h heldEvent) {
	if ch != nil && h.kind == twinOwn {
		ch.foreign.skipNext = true
	}
	if h.err != nil {
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: dropped a message on a channel's twin",
			slog.String("channel", h.channel), slog.String("error", h.err.Error()))
		return
	}
	if h.event != nil {
		b.seen = max(b.seen, h.event.Seq)
	}
	if ch == nil {
		return
	}
	f := &ch.foreign
	switch h.kind {
	case twinLost:
		b.receiveLost(ch, h.notice)
		return
	case twinSync:
		f.notices, f.synced = h.notice, true
		b.kickIngest(ch)
		return
	case twinNotice:
		f.notices = h.notice
		if i := indexPayload(f.held, h.payload); i >= 0 {
			f.heldBytes -= len(f.held[i].payload)
			f.held = append(f.held[:i], f.held[i+1:]...)
			if len(f.held) == 0 {
				delete(b.holding, ch)
			}
		} else if i := indexPayload(f.gone, h.payload); i >= 0 {
			// Delivered already, without a seq.
			f.gone = append(f.gone[:i], f.gone[i+1:]...)
			b.kickIngest(ch)
			return
		} else if b.cluster != nil {
			// The message may still come on the other connection.
			f.early = append(f.early, foreignMsg{payload: h.payload, at: time.Now()})
			if len(f.early) > maxGone {
				f.early = f.early[len(f.early)-maxGone:]
			}
		}
		defer b.kickIngest(ch)
	}
	b.deliver(ch, h.event)
}

func indexPayload(msgs []foreignMsg, payload string) int {
	for i, m := range msgs {
		if m.payload == payload {
			return i
		}
	}
	return -1
}

// holdForeign holds a message of another publisher until its notice comes.
// b.mu must be held.
func (b *Broker) holdForeign(ch *channel, payload string, e *ssehub.Event) {
	f := &ch.foreign
	if len(f.held) >= maxForeignHeld || f.heldBytes+len(payload) > maxForeignHeldBytes {
		b.deliver(ch, e)
		return
	}
	f.held = append(f.held, foreignMsg{payload: payload, event: e, at: time.Now()})
	f.heldBytes += len(payload)
	if b.holding == nil {
		b.holding = map[*channel]struct{}{}
	}
	b.holding[ch] = struct{}{}
	b.kickIngest(ch)
}

// kickIngest asks Redis to take in the first held message of ch, unless a
// request is under way or the count of notices is not known yet. b.mu must
// be held.
func (b *Broker) kickIngest(ch *channel) {
	f := &ch.foreign
	if b.closed || !f.synced || f.ingesting || len(f.held) == 0 {
		return
	}
	f.ingesting = true
	go b.ingest(ch, f.held[0], f.notices)
}

// ingest runs the publish script in "i" mode for m, as a hub that has seen
// notices notices of ch.
func (b *Broker) ingest(ch *channel, m foreignMsg, notices uint64) {
	e := m.event
	var idJSON []byte
	if e.ID != "" {
		idJSON = appendJSONString(nil, e.ID)
	}
	// No idempotency key: the count of notices keeps a message from being
	// taken in twice.
	k := b.keysOf(ch.name)
	keys := []string{k.state, k.active, k.evicted, k.stream, k.ids, k.first, k.bytes, k.keys, k.keyq, k.notices}
	args := []any{ch.name, appendForeignHead(nil, []byte(m.payload)), idJSON, e.ID, b.size, b.ageMicros(), k.prefix,
		b.bytes, b.chanBytes, "", "", "", 0, b.maxKeys, "i", notices, "", b.pubMode()}
	ctx, cancel := context.WithTimeout(b.ctx, foreignHold)
	res, err := publishScript.Run(ctx, b.client, keys, args...).Int64Slice()
	cancel()

	b.mu.Lock()
	defer b.mu.Unlock()
	f := &ch.foreign
	f.ingesting = false
	if b.closed || b.channels[ch.name] != ch {
		return
	}
	switch {
	case err != nil:
		// The message waits for its notice, or for foreignHold.
		b.metrics.BrokerError()
		b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: could not take a foreign message into the history",
			slog.String("channel", ch.name), slog.String("error", err.Error()))
	case len(res) == 3 && res[2] == 3 && res[1] >= 0 && uint64(res[1]) < notices:
		// The count went back (it expired, or Redis lost its data).
		go b.sync(ch.name)
	}
	if f.notices != notices {
		// Notices came meanwhile: the next request counts them.
		b.kickIngest(ch)
	}
}

// sync publishes the count of notices of channel on its twin.
func (b *Broker) sync(name string) {
	ctx, cancel := context.WithTimeout(b.ctx, foreignHold)
	defer cancel()
	if err := syncScript.Run(ctx, b.client, []string{b.keysOf(name).notices}, b.twin(name), b.pubMode()).Err(); err != nil && ctx.Err() == nil {
		b.log.LogAttrs(ctx, slog.LevelDebug, "redisbroker: sync of a channel's notices failed",
			slog.String("channel", name), slog.String("error", err.Error()))
	}
}

// expireHeld delivers, without a seq, the foreign messages held longer
// than foreignHold, until the broker closes.
func (b *Broker) expireHeld() {
	defer b.wg.Done()
	tick := time.NewTicker(foreignHold / 4)
	defer tick.Stop()
	for {
		select {
		case <-b.done:
			return
		case <-tick.C:
		}
		var resync []string
		now := time.Now()
		b.mu.Lock()
		for ch := range b.holding {
			f := &ch.foreign
			if b.channels[ch.name] != ch || len(f.held) == 0 {
				delete(b.holding, ch)
				continue
			}
			expired := 0
			for expired < len(f.held) && now.Sub(f.held[expired].at) >= foreignHold {
				m := f.held[expired]
				b.deliver(ch, m.event)
				f.heldBytes -= len(m.payload)
				f.gone = append(f.gone, m)
				expired++
			}
			if expired > 0 {
				f.held = f.held[expired:]
				if len(f.held) == 0 {
					delete(b.holding, ch)
				}
				if len(f.gone) > maxGone {
					f.gone = f.gone[len(f.gone)-maxGone:]
				}
				resync = append(resync, ch.name)
				b.log.LogAttrs(context.Background(), slog.LevelWarn, "redisbroker: delivered foreign messages not taken into the history",
					slog.String("channel", ch.name), slog.Int("messages", expired))
			}
			for len(f.gone) > 0 && now.Sub(f.gone[0].at) > time.Minute {
				f.gone = f.gone[1:]
			}
			for len(f.early) > 0 && now.Sub(f.early[0].at) > time.Minute {
				f.early = f.early[1:]
			}
		}
		b.mu.Unlock()
		for _, name := range resync {
			b.sync(name)
		}
	}
}
