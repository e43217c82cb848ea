package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/ssehub/ssehub"
)

// A replay reads history in pages, each one script call that returns at
// most replayPageEvents events of one channel and about replayPageBytes
// (at least one event, so a page is at most one message larger). A
// replay holds at most one page per channel at a time.
const (
	replayPageEvents = 256
	replayPageBytes  = 256 << 10
)

// errTrimmed means events a replay had yet to read were trimmed meanwhile.
var errTrimmed = errors.New("events were trimmed during the replay")

// bounds is what resolve.lua found for a replay.
type bounds struct {
	seq   uint64 // the last seq issued or reserved, over all channels
	head  uint64 // the head of the channels
	start uint64 // the position the last event id stands for, when found
	found bool
	ok    []bool   // per channel: the events after its start are all there
	heads []uint64 // per channel: its head
}

// resolve runs resolve.lua for channels. With from nil, the start comes
// from lastEventID; otherwise from[i] is channel i's start.
func (b *Broker) resolve(ctx context.Context, channels []string, lastEventID string, from []uint64) (bounds, error) {
	keys := make([]string, 0, 3+2*len(channels))
	k0 := b.keysOf("")
	if len(channels) > 0 {
		k0 = b.keysOf(channels[0])
	}
	keys = append(keys, k0.state, k0.active, k0.evicted)
	args := make([]any, 0, 3+2*len(channels))
	history := "0"
	if b.size > 0 {
		history = "1"
	}
	age := int64(0)
	if b.age > 0 {
		age = b.age.Microseconds()
	}
	args = append(args, lastEventID, history, age)
	for _, name := range channels {
		k := b.keysOf(name)
		keys = append(keys, k.stream, k.ids)
		args = append(args, name)
	}
	for i := range channels {
		if from == nil {
			args = append(args, "")
		} else {
			args = append(args, strconv.FormatUint(from[i], 10))
		}
	}
	res, err := resolveScript.Run(ctx, b.client, keys, args...).Slice()
	if err != nil {
		return bounds{}, unavailable("replay", err)
	}
	if len(res) != 3+2*len(channels) {
		return bounds{}, fmt.Errorf("redisbroker: resolve script returned %d values for %d channels", len(res), len(channels))
	}
	var r bounds
	r.seq, err = strconv.ParseUint(fmt.Sprint(res[0]), 10, 64)
	if err == nil {
		r.head, err = strconv.ParseUint(fmt.Sprint(res[1]), 10, 64)
	}
	if err != nil {
		return bounds{}, fmt.Errorf("redisbroker: resolve script returned %v", res[:2])
	}
	if s := fmt.Sprint(res[2]); s != "" {
		r.start, err = strconv.ParseUint(s, 10, 64)
		r.found = err == nil
	}
	r.ok, r.heads = make([]bool, len(channels)), make([]uint64, len(channels))
	for i := range channels {
		ok, _ := res[3+2*i].(int64)
		r.ok[i] = ok == 1
		if r.heads[i], err = strconv.ParseUint(fmt.Sprint(res[4+2*i]), 10, 64); err != nil {
			return bounds{}, fmt.Errorf("redisbroker: resolve script returned head %v", res[4+2*i])
		}
	}
	return r, nil
}

// Replay implements ssehub.Replayer, reading the channels' streams in
// Redis page by page and passing events to fn as the pages come. At most
// Options.MaxReplays replays run at once; a replay waits its turn until ctx
// ends. When events it has yet to read are trimmed meanwhile, it returns
// an error wrapping ssehub.ErrUnknownID after fn has seen some events.
func (b *Broker) Replay(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error) {
	if b.isClosed() {
		return ssehub.Cursor{}, ssehub.ErrClosed
	}
	release, err := b.waitReplay(ctx)
	if err != nil {
		return ssehub.Cursor{}, err
	}
	defer release()
	if b.cluster != nil {
		return b.replayCluster(ctx, channels, lastEventID, fn)
	}
	r, err := b.resolve(ctx, channels, lastEventID, nil)
	if err != nil {
		if errors.Is(err, ssehub.ErrUnavailable) {
			b.metrics.BrokerError()
		}
		return ssehub.Cursor{}, err
	}
	head := ssehub.Cursor{ID: FormatSeq(r.head), Seq: r.head}
	if !r.found || slices.Contains(r.ok, false) {
		return head, fmt.Errorf("%w: %q", ssehub.ErrUnknownID, lastEventID)
	}
	if b.size <= 0 {
		return head, nil
	}
	after := make([]uint64, len(channels))
	for i := range after {
		after[i] = r.start
	}
	upto := make([]uint64, len(channels))
	for i := range upto {
		upto[i] = r.head
	}
	err = b.readPages(ctx, channels, after, upto, fn)
	if errors.Is(err, errTrimmed) {
		return head, fmt.Errorf("%w: %q: %w", ssehub.ErrUnknownID, lastEventID, err)
	}
	return head, err
}

// waitReplay waits for a replay's turn and returns the func that ends it.
func (b *Broker) waitReplay(ctx context.Context) (func(), error) {
	if b.replays == nil {
		return func() {}, nil
	}
	select {
	case b.replays <- struct{}{}:
		return func() { <-b.replays }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.done:
		return nil, ssehub.ErrClosed
	}
}

// Head implements ssehub.Replayer: the Redis clock, or the highest seq the
// channels have seen when later (see resolve.lua).
func (b *Broker) Head(ctx context.Context, channels []string) (ssehub.Cursor, error) {
	if b.isClosed() {
		return ssehub.Cursor{}, ssehub.ErrClosed
	}
	if b.cluster != nil {
		heads, err := b.channelHeads(ctx, channels)
		if err != nil {
			if errors.Is(err, ssehub.ErrUnavailable) {
				b.metrics.BrokerError()
			}
			return ssehub.Cursor{}, err
		}
		return positions(channels, heads), nil
	}
	r, err := b.resolve(ctx, channels, "", nil)
	if err != nil {
		if errors.Is(err, ssehub.ErrUnavailable) {
			b.metrics.BrokerError()
		}
		return ssehub.Cursor{}, err
	}
	return ssehub.Cursor{ID: FormatSeq(r.head), Seq: r.head}, nil
}

// pager reads one channel's events for a replay, a page at a time.
type pager struct {
	name  string
	after uint64 // the seq of the last entry read
	upto  uint64 // the last seq to read
	buf   []*ssehub.Event
	more  bool
}

// readPages passes fn the events of channels after after[i] up to
// upto[i], in seq order across channels, reading each channel a page at a
// time.
func (b *Broker) readPages(ctx context.Context, channels []string, after, upto []uint64, fn func(*ssehub.Event) error) error {
	ps := make([]*pager, len(channels))
	for i, name := range channels {
		ps[i] = &pager{name: name, after: after[i], upto: upto[i], more: true}
	}
	for {
		var next *pager
		for _, p := range ps {
			for len(p.buf) == 0 && p.more {
				if err := b.page(ctx, p); err != nil {
					return err
				}
			}
			if len(p.buf) > 0 && (next == nil || p.buf[0].Seq < next.buf[0].Seq) {
				next = p
			}
		}
		if next == nil {
			return nil
		}
		e := next.buf[0]
		next.buf[0] = nil
		next.buf = next.buf[1:]
		if err := fn(e); err != nil {
			return err
		}
	}
}

// page reads p's next page.
func (b *Broker) page(ctx context.Context, p *pager) error {
	k := b.keysOf(p.name)
	keys := []string{k.state, k.active, k.evicted, k.stream}
	res, err := pageScript.Run(ctx, b.client, keys, p.name, p.after, p.upto, replayPageEvents, replayPageBytes).Slice()
	if err != nil {
		b.metrics.BrokerError()
		return unavailable("replay", err)
	}
	if len(res) != 3 {
		return fmt.Errorf("redisbroker: page script returned %d values", len(res))
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return errTrimmed
	}
	more, _ := res[1].(int64)
	entries, _ := res[2].([]any)
	p.more = more == 1 && len(entries) > 0
	p.buf = p.buf[:0]
	for _, entry := range entries {
		if seq, ok := entrySeq(entry); ok && seq > p.after {
			p.after = seq
		}
		e, err := b.entryEvent(p.name, entry)
		if err != nil {
			// Only ssehub writes streams; a bad entry means the data was
			// changed behind its back.
			b.log.LogAttrs(ctx, slog.LevelWarn, "redisbroker: skipped a bad stream entry",
				slog.String("channel", p.name), slog.String("error", err.Error()))
			continue
		}
		p.buf = append(p.buf, e)
	}
	return nil
}

// entrySeq returns the seq of a stream entry, [id, fields].
func entrySeq(entry any) (uint64, bool) {
	parts, _ := entry.([]any)
	if len(parts) != 2 {
		return 0, false
	}
	id, _ := parts[0].(string)
	n, err := strconv.ParseUint(strings.TrimSuffix(id, "-0"), 10, 64)
	return n, err == nil
}

// entryEvent decodes one stream entry, [id, [field, value, ...]].
func (b *Broker) entryEvent(channel string, entry any) (*ssehub.Event, error) {
	parts, _ := entry.([]any)
	if len(parts) != 2 {
		return nil, fmt.Errorf("entry %v", entry)
	}
	fields, _ := parts[1].([]any)
	for i := 0; i+1 < len(fields); i += 2 {
		if fields[i] == "e" {
			payload, _ := fields[i+1].(string)
			e, err := decodeEnvelope(channel, []byte(payload))
			if err != nil {
				return nil, err
			}
			if e.Seq == 0 {
				return nil, fmt.Errorf("entry %v holds no sequence number", parts[0])
			}
			return e, nil
		}
	}
	return nil, fmt.Errorf("entry %v has no envelope", parts[0])
}
