package ssehub

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// DefaultIdempotencyWindow is how long a broker remembers the idempotency
// key of a publish: a message sent again with the same key within that
// time is not published again.
const DefaultIdempotencyWindow = 5 * time.Minute

// maxMemoryKeys bounds how many idempotency keys a MemoryBroker remembers,
// so that publishers cannot fill its memory with keys: past it the oldest
// are forgotten first. A record takes about 250 bytes.
const maxMemoryKeys = 100_000

// idempotencyKeys remembers, per key, the event a keyed publish produced,
// for DefaultIdempotencyWindow. It keeps a digest of the message, never
// the event itself, so that remembered keys do not hold evicted events in
// memory. Its user serialises calls.
type idempotencyKeys struct {
	byKey map[string]*keyRecord
	order []*keyRecord // oldest first; all share one window, so also by expiry
}

type keyRecord struct {
	key     string
	id      string
	seq     uint64
	t       time.Time
	sum     [sha256.Size]byte // of the message, to refuse a key reused for another
	expires time.Time
}

// messageSum digests what makes m the message it is.
func messageSum(m Message) [sha256.Size]byte {
	h := sha256.New()
	var n [8]byte
	for _, s := range []string{m.Channel, m.Type, m.ID, string(m.Data)} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	binary.BigEndian.PutUint64(n[:], uint64(m.Retry))
	h.Write(n[:])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// published returns the event published earlier with m's idempotency key,
// or nil when there is none, or an error wrapping ErrIdempotencyKeyReused
// when that key came with another message.
func (k *idempotencyKeys) published(m Message, now time.Time) (*Event, error) {
	if m.IdempotencyKey == "" {
		return nil, nil
	}
	k.expire(now)
	r := k.byKey[m.IdempotencyKey]
	if r == nil {
		return nil, nil
	}
	if r.sum != messageSum(m) {
		return nil, fmt.Errorf("%w: %q", ErrIdempotencyKeyReused, m.IdempotencyKey)
	}
	return NewEvent(m.Channel, r.id, m.Type, m.Data, m.Retry, r.seq, r.t), nil
}

// remember records e as the event of m's idempotency key, if it has one.
func (k *idempotencyKeys) remember(m Message, e *Event, now time.Time) {
	if m.IdempotencyKey == "" {
		return
	}
	if k.byKey == nil {
		k.byKey = map[string]*keyRecord{}
	}
	r := &keyRecord{key: m.IdempotencyKey, id: e.ID, seq: e.Seq, t: e.Time, sum: messageSum(m), expires: now.Add(DefaultIdempotencyWindow)}
	k.byKey[r.key] = r
	k.order = append(k.order, r)
	for len(k.byKey) > maxMemoryKeys {
		k.drop()
	}
}

// expire forgets the keys whose window has passed.
func (k *idempotencyKeys) expire(now time.Time) {
	for len(k.order) > 0 && !now.Before(k.order[0].expires) {
		k.drop()
	}
}

// drop forgets the oldest key.
func (k *idempotencyKeys) drop() {
	r := k.order[0]
	k.order[0] = nil
	k.order = k.order[1:]
	if k.byKey[r.key] == r {
		delete(k.byKey, r.key)
	}
	if len(k.order) == 0 {
		k.order = nil // let the array go
	}
}
