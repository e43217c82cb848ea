package redisbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
)

const (
	// generatedKeyWindow is how long Redis remembers a key the broker made
	// for a publish that came without one. Such a key only guards against
	// go-redis sending the script again, which happens within seconds.
	generatedKeyWindow = 30 * time.Second
	// fenceShare is the part of a publish's time kept for fence.lua when
	// the publish script does not answer.
	fenceShare = 4
	// fenceTimeout bounds fence.lua when the publish has no deadline.
	fenceTimeout = time.Second
)

// Publish implements ssehub.Broker. The event is in the channel's history
// and on its way to every subscribed hub when Publish returns.
//
// Every publish carries an idempotency key: the message's, or one the
// broker makes. When Redis does not answer before ctx ends (or the
// connection breaks), Publish asks Redis whether the key was published
// and, if not, closes it to the attempt still on its way: it then returns
// the event, or an error wrapping ssehub.ErrUnavailable (not published).
// Only when Redis cannot answer that either does it return an error
// wrapping ssehub.ErrOutcomeUnknown. An error wrapping ErrUnavailable also
// means Redis could not be reached at all.
//
// Publishes made at once go to Redis together, in one pipeline (batch.go).
// With Options.WaitReplicas, a publish that fewer replicas confirmed in
// time returns an error wrapping both ssehub.ErrOutcomeUnknown and
// ErrNotReplicated.
func (b *Broker) Publish(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
	if b.isClosed() {
		return nil, ssehub.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, unavailable(fmt.Sprintf("publish on %q", m.Channel), err)
	}
	// After a failed connection, first what was published before it
	// (rewind.go).
	if err := b.checkPublished(ctx); err != nil {
		return nil, err
	}
	key, window := m.IdempotencyKey, b.keyWindow
	if key == "" {
		key, window = "~"+token(16), generatedKeyWindow
	}
	attempt := token(9)
	keys, args, fp := b.publishArgs(m, key, window, attempt)

	callCtx, cancel := ctx, context.CancelFunc(func() {})
	if d, ok := ctx.Deadline(); ok {
		callCtx, cancel = context.WithDeadline(ctx, time.Now().Add(time.Until(d)*(fenceShare-1)/fenceShare))
	}
	dials := b.dials()
	c := &call{script: publishScript, keys: keys, args: args, bytes: len(m.Data) + len(m.Type) + len(m.ID)}
	err := b.batch.do(callCtx, c)
	cancel()
	var res []int64
	if err == nil {
		res, err = c.reply, c.err
	}
	published := err == nil && len(res) == 3 && res[2] != 2 && res[0] > 0
	if published && b.waitReplicas <= 0 {
		b.notePublished(ctx, m.Channel, uint64(res[0]), dials)
		return b.event(m, uint64(res[0])), nil
	}
	op := fmt.Sprintf("publish on %q", m.Channel)
	switch {
	case published:
		if err := b.replicated(c, op); err != nil {
			b.metrics.BrokerError()
			return nil, err
		}
		b.notePublished(ctx, m.Channel, uint64(res[0]), dials)
		return b.event(m, uint64(res[0])), nil
	case err == nil:
		return nil, fmt.Errorf("redisbroker: publish script returned %v", res)
	case strings.HasPrefix(err.Error(), "SSEHUB_KEY_REUSED"):
		return nil, fmt.Errorf("%w: %q", ssehub.ErrIdempotencyKeyReused, m.IdempotencyKey)
	}
	b.metrics.BrokerError()
	if b.cluster == nil {
		b.published.freeze()
	} else {
		// The master may have failed over: learn the slots again.
		b.cluster.ReloadState(ctx)
	}
	if unreachable(err) || refused(err) {
		return nil, unavailable(op, err)
	}
	// The script may have run, or may still run: settle it.
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fenceTimeout)
	if d, ok := ctx.Deadline(); ok {
		fctx, cancel = context.WithDeadline(context.WithoutCancel(ctx), d)
	}
	defer cancel()
	fres, ferr := bounded(fctx, func(ctx context.Context) ([]int64, error) {
		k := b.keysOf(m.Channel)
		return fenceScript.Run(ctx, b.client, []string{k.keys, k.keyq},
			key, attempt, fp, max(window, b.keyWindow).Microseconds()).Int64Slice()
	})
	switch {
	case ferr != nil || len(fres) != 2:
		return nil, fmt.Errorf("%w: %s: %w", ssehub.ErrOutcomeUnknown, op, err)
	case fres[0] == 1 && b.waitReplicas > 0:
		// Published, but the WAIT that would confirm it was on the lost
		// call's connection.
		return nil, &replicationError{fmt.Sprintf("%s: %s: published, but the replicas' confirmation did not come: %v", ssehub.ErrOutcomeUnknown, op, err), err}
	case fres[0] == 1:
		b.notePublished(ctx, m.Channel, uint64(fres[1]), dials)
		return b.event(m, uint64(fres[1])), nil
	case fres[0] == 2:
		return nil, fmt.Errorf("%w: %q", ssehub.ErrIdempotencyKeyReused, m.IdempotencyKey)
	}
	return nil, fmt.Errorf("%w: %s: not published: %w", ssehub.ErrUnavailable, op, err)
}

// replicated returns nil when the publish of c needs no replica's
// confirmation or got it (Options.WaitReplicas), else an error wrapping
// ssehub.ErrOutcomeUnknown: the event is published, and may be lost if
// the master fails before a replica copies it. Sending it again with the
// same idempotency key publishes nothing more, and waits again.
func (b *Broker) replicated(c *call, op string) error {
	switch {
	case b.waitReplicas <= 0:
		return nil
	case c.waitErr != nil:
		return &replicationError{fmt.Sprintf("%s: %s: published, but the replicas' confirmation did not come: %v", ssehub.ErrOutcomeUnknown, op, c.waitErr), c.waitErr}
	case c.replicas < int64(b.waitReplicas):
		return &replicationError{fmt.Sprintf("%s: %s: published, but only %d of %d replicas confirmed it within %s", ssehub.ErrOutcomeUnknown, op, c.replicas, b.waitReplicas, b.waitTimeout), nil}
	}
	return nil
}

// ErrNotReplicated means that an event was published, but fewer replicas
// than Options.WaitReplicas confirmed holding it in time. An error that
// wraps it also wraps ssehub.ErrOutcomeUnknown.
var ErrNotReplicated = errors.New("redisbroker: published, but not confirmed by enough replicas")

// replicationError is a publish that fewer replicas than asked confirmed.
type replicationError struct {
	msg   string
	cause error // nil, or why WAIT did not answer
}

func (e *replicationError) Error() string { return e.msg }

func (e *replicationError) Unwrap() []error {
	errs := []error{ssehub.ErrOutcomeUnknown, ErrNotReplicated}
	if e.cause != nil {
		errs = append(errs, e.cause)
	}
	return errs
}

// publishArgs returns the keys and arguments of publish.lua for m, and
// the message's fingerprint.
func (b *Broker) publishArgs(m ssehub.Message, key string, window time.Duration, attempt string) ([]string, []any, string) {
	head := appendEnvelopeHead(make([]byte, 0, len(m.Data)+len(m.Type)+64), m)
	var idJSON []byte
	if m.ID != "" {
		idJSON = appendJSONString(nil, m.ID)
	}
	fp := fingerprint(m.Channel, head, idJSON)
	k := b.keysOf(m.Channel)
	keys := []string{k.state, k.active, k.evicted, k.stream, k.ids, k.first, k.bytes, k.keys, k.keyq}
	args := []any{m.Channel, head, idJSON, m.ID, b.size, b.ageMicros(), k.prefix, b.bytes, b.chanBytes,
		key, fp, attempt, window.Microseconds(), b.maxKeys}
	switch {
	case b.flask:
		args = append(args, "f", appendFlaskHead(nil, m), appendFlaskTail(nil, m))
	case b.cluster != nil:
		args = append(args, "", "", "", "s")
	}
	return keys, args, fp
}

// pubMode is what the scripts take to publish: "s" for SPUBLISH on a
// cluster, "" for PUBLISH.
func (b *Broker) pubMode() string {
	if b.cluster != nil {
		return "s"
	}
	return ""
}

// ageMicros is the history age as publish.lua takes it: 0 for no limit.
func (b *Broker) ageMicros() int64 {
	if b.age > 0 {
		return b.age.Microseconds()
	}
	return 0
}

// event returns the event the publish of m got as seq.
func (b *Broker) event(m ssehub.Message, seq uint64) *ssehub.Event {
	id := m.ID
	if id == "" {
		id = FormatSeq(seq)
	}
	return ssehub.NewEvent(m.Channel, id, m.Type, m.Data, m.Retry, seq, time.UnixMicro(int64(seq)))
}

// bounded runs f and returns its result, or ctx's error as soon as ctx
// ends: go-redis bounds its reads by its own timeouts unless the client
// has ContextTimeoutEnabled, and an answer must not wait for them. f keeps
// running until go-redis gives up.
func bounded[T any](ctx context.Context, f func(context.Context) (T, error)) (T, error) {
	if ctx.Done() == nil {
		return f(ctx)
	}
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := f(ctx)
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// unreachable reports whether err says that the command never reached
// Redis: no connection could be made or had. go-redis returns the last
// attempt's error; an earlier attempt cut off by a broken connection may
// have reached a Redis that went down right after.
func unreachable(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial" ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed)
}

// fingerprint tells messages apart for the idempotency record: the hex
// SHA-256 of what publish.lua is given of the message.
func fingerprint(channel string, head, idJSON []byte) string {
	h := sha256.New()
	h.Write([]byte(channel))
	h.Write([]byte{0})
	h.Write(head)
	h.Write([]byte{0})
	h.Write(idJSON)
	return hex.EncodeToString(h.Sum(nil))
}

// token returns n random bytes as text.
func token(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
