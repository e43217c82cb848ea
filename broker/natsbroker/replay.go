package natsbroker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/ssehub/ssehub"
)

// Replay implements ssehub.Replayer. It reads each channel's events after
// lastEventID from the stream's leader, one request per event, channels in
// parallel, and merges them in stream order. The head it returns is the
// stream's last sequence number when the replay started, as a position
// (see Head).
//
// lastEventID is unknown when it is neither an id of this stream nor a
// publisher's id found in the index for one of channels, and ambiguous
// when it is both, or a publisher's id of more than one retained event of
// channels. Events of a channel after it are gone when the channel has
// since received more than Options.HistorySize events, or when they
// expired. All three get ErrUnknownID, before fn is called.
func (b *Broker) Replay(ctx context.Context, channels []string, lastEventID string, fn func(*ssehub.Event) error) (ssehub.Cursor, error) {
	if b.isClosed() {
		return ssehub.Cursor{}, ssehub.ErrClosed
	}
	st, err := b.streams(ctx)
	if err != nil {
		return ssehub.Cursor{}, err
	}
	info, err := b.info(ctx, st, "")
	if err != nil {
		return ssehub.Cursor{}, err
	}
	last := info.State.LastSeq
	head := st.position(last)
	if b.size <= 0 {
		return head, fmt.Errorf("%w: %q: no history kept", ssehub.ErrUnknownID, lastEventID)
	}
	pos, why, err := b.resolve(ctx, st, channels, lastEventID, last)
	if err != nil {
		return ssehub.Cursor{}, err
	}
	if why != "" {
		return head, fmt.Errorf("%w: %q: %s", ssehub.ErrUnknownID, lastEventID, why)
	}

	results := make([]channelReplay, len(channels))
	parallel(len(channels), func(i int) { results[i] = b.readChannel(ctx, st, channels[i], pos, last) })
	var events []*ssehub.Event
	for _, r := range results {
		switch {
		case r.err != nil:
			return ssehub.Cursor{}, r.err
		case r.gone:
			return head, fmt.Errorf("%w: %q: events after it are gone", ssehub.ErrUnknownID, lastEventID)
		}
		events = append(events, r.events...)
	}
	slices.SortFunc(events, func(x, y *ssehub.Event) int { return cmp.Compare(x.Seq, y.Seq) })
	for _, e := range events {
		if err := fn(e); err != nil {
			return head, err
		}
	}
	return head, nil
}

// parallel calls f(0) to f(n-1), checkParallel at a time, and returns
// when all have returned.
func parallel(n int, f func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, checkParallel)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			f(i)
		})
	}
	wg.Wait()
}

// resolve returns the stream position id stands for on channels, or why it
// stands for none: the position an id or position of this stream
// incarnation encodes, or that of the one retained event of channels a
// publisher gave that id. An id that stands for two positions, or names
// two retained events, is ambiguous: a client holding it may have seen
// either, and a guess could skip the events in between.
func (b *Broker) resolve(ctx context.Context, st *streamState, channels []string, id string, last uint64) (pos uint64, why string, err error) {
	issued, ours := st.ids.decode(id)
	ours = ours && issued <= last
	found := make([][]uint64, len(channels))
	errs := make([]error, len(channels))
	parallel(len(channels), func(i int) { found[i], errs[i] = b.indexed(ctx, st, channels[i], id, last) })
	if err := errors.Join(errs...); err != nil {
		return 0, "", err
	}
	// Positions of the events a publisher gave id, and their channels.
	var (
		named []uint64
		on    []int
	)
	for i, seqs := range found {
		for _, seq := range seqs {
			named, on = append(named, seq), append(on, i)
		}
	}
	if len(named) > 1 || (ours && len(named) == 1 && named[0] != issued) {
		// Only retained events count: one that left the stream cannot be
		// what the client saw last, and a resume from it would find its
		// successors gone anyway.
		var kept []uint64
		for k, seq := range named {
			ok, err := b.retained(ctx, channels[on[k]], seq)
			if err != nil {
				return 0, "", err
			}
			if ok {
				kept = append(kept, seq)
			}
		}
		named = kept
	}
	switch {
	case len(named) > 1:
		return 0, "ambiguous: a publisher gave it to more than one event", nil
	case len(named) == 1 && ours && named[0] != issued:
		return 0, "ambiguous: a publisher gave an event an id of the broker's", nil
	case len(named) == 1:
		return named[0], "", nil
	case ours:
		return issued, "", nil
	}
	return 0, "unknown", nil
}

// indexed returns the positions, at or before last, that the index holds
// for a publisher's id on channel name: none, one, or two when the id was
// given to more than one event.
func (b *Broker) indexed(ctx context.Context, st *streamState, name, id string, last uint64) ([]uint64, error) {
	subject := b.idsSubj + "." + indexKey(name, id)
	newest, err := b.getMsg(ctx, b.idsStream, msgGetRequest{LastFor: subject})
	if err != nil || newest == nil {
		return nil, err
	}
	var seqs []uint64
	add := func(m *storedMsg) {
		// An entry holds the position as the event's id, so one left over
		// from an earlier stream incarnation does not decode.
		if seq, ok := st.ids.decode(string(m.Data)); ok && seq <= last && !slices.Contains(seqs, seq) {
			seqs = append(seqs, seq)
		}
	}
	add(newest)
	oldest, err := b.getMsg(ctx, b.idsStream, msgGetRequest{Seq: 1, NextFor: subject})
	if err != nil {
		return nil, err
	}
	if oldest != nil && oldest.Seq != newest.Seq {
		add(oldest)
	}
	return seqs, nil
}

// retained reports whether the event at seq, of channel name, is still in
// the stream.
func (b *Broker) retained(ctx context.Context, name string, seq uint64) (bool, error) {
	m, err := b.getMsg(ctx, b.stream, msgGetRequest{Seq: seq})
	if err != nil {
		return false, err
	}
	return m != nil && m.Subject == b.subjectOf(name), nil
}

// channelReplay is what Replay read of one channel.
type channelReplay struct {
	events []*ssehub.Event
	gone   bool // some events after the position left the stream
	err    error
}

// eagerEvents is how many events readChannel reads before it checks
// whether the channel lost events after the position at all: a client
// far behind then costs a few requests, not a full history, and one just
// behind pays for no check up front.
const eagerEvents = 4

// readChannel reads the events of channel name after pos, up to last.
func (b *Broker) readChannel(ctx context.Context, st *streamState, name string, pos, last uint64) channelReplay {
	subject := b.subjectOf(name)
	var r channelReplay
	limit := b.size + 1 // more than HistorySize events after pos: too far behind
	m, err := b.getMsg(ctx, b.stream, msgGetRequest{Seq: pos + 1, NextFor: subject})
	for ; err == nil && m != nil && m.Seq <= last; m, err = b.getMsg(ctx, b.stream, msgGetRequest{Seq: m.Seq + 1, NextFor: subject}) {
		if len(r.events) == limit {
			return channelReplay{gone: true}
		}
		if len(r.events) == eagerEvents {
			if gone, err := b.gone(ctx, st, name, pos); err != nil || gone {
				return channelReplay{gone: gone, err: err}
			}
		}
		h, herr := m.header()
		var e *ssehub.Event
		if herr == nil {
			e, herr = b.decode(st.ids, m.Subject, h, m.Data, m.Seq, m.Time)
		}
		if herr != nil {
			b.log.LogAttrs(ctx, slog.LevelWarn, "natsbroker: skipped a message that is not a valid event",
				slog.String("subject", m.Subject), slog.Uint64("seq", m.Seq), slog.String("error", herr.Error()))
			continue
		}
		r.events = append(r.events, e)
	}
	if err != nil {
		return channelReplay{err: err}
	}
	// Events leave a subject oldest first, so one that left before it was
	// read took every event at or before pos with it: check once read.
	gone, err := b.gone(ctx, st, name, pos)
	if err != nil || gone {
		return channelReplay{gone: gone, err: err}
	}
	return r
}

// gone reports whether events of channel name published after pos have
// left the stream.
//
// Events of one subject leave the stream oldest first: by age and by the
// stream's byte limit, which both take the stream's oldest events, and by
// the limit per subject, which takes the subject's oldest. So when the
// channel still holds an event at or before pos, none after pos is gone.
// Otherwise see goneFrom.
func (b *Broker) gone(ctx context.Context, st *streamState, name string, pos uint64) (bool, error) {
	subject := b.subjectOf(name)
	first, err := b.getMsg(ctx, b.stream, msgGetRequest{Seq: 1, NextFor: subject})
	if err != nil {
		return false, err
	}
	if first != nil && first.Seq <= pos {
		return false, nil
	}
	return b.goneFrom(ctx, st, subject, pos)
}

// goneFrom is gone for a subject that holds no event at or before pos.
// Events after pos taken by age or size were the stream's oldest then, so
// the stream now starts after them, beyond pos+1. Events after pos taken by
// the limit per subject left that many younger ones behind: the subject
// holds a full quota. When neither holds, nothing after pos is gone. The
// quota is one more than HistorySize, so that a subject with exactly
// HistorySize events after pos is not taken for one that lost some.
func (b *Broker) goneFrom(ctx context.Context, st *streamState, subject string, pos uint64) (bool, error) {
	info, err := b.info(ctx, st, subject)
	if err != nil {
		return false, err
	}
	if info.State.FirstSeq > pos+1 {
		return true, nil
	}
	return st.perSubject > 0 && int64(info.State.Subjects[subject]) >= st.perSubject, nil
}
