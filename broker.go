package ssehub

import "context"

// A Broker carries published messages to every hub process subscribed to
// their channel. The Hub reference-counts subscriptions: it calls Subscribe
// once per channel, however many local subscribers that channel has, and
// cancels when the last of them leaves.
//
// All methods are safe for concurrent use.
type Broker interface {
	// Publish assigns m an id when it has none, records it in history when
	// the broker keeps one, and delivers it to the channel's subscribers.
	// m has been normalized. It returns the event as subscribers will see
	// it.
	//
	// When m has an IdempotencyKey that the broker has seen with the same
	// message within its idempotency window, Publish returns the event
	// published then and publishes nothing; with another message, an error
	// wrapping ErrIdempotencyKeyReused.
	//
	// An error wrapping ErrUnavailable means nothing was published; one
	// wrapping ErrOutcomeUnknown means the broker cannot tell (it did not
	// answer before ctx ended).
	Publish(ctx context.Context, m Message) (*Event, error)

	// Subscribe starts passing the events of channel to deliver and returns
	// once the subscription is in place: every event published after it
	// returns is delivered. Calls to deliver for one channel never overlap
	// and come in publish order; deliver must not block. cancel ends the
	// subscription; deliver is not called after cancel returns.
	Subscribe(ctx context.Context, channel string, deliver func(*Event)) (cancel func(), err error)

	// Close releases the broker's resources. Later calls return ErrClosed.
	Close(ctx context.Context) error
}

// A Replayer is a Broker that keeps history and can replay it. The Hub
// detects it by type assertion.
type Replayer interface {
	// Replay calls fn, in publish order and once each, for the retained
	// events of channels published after the event with id lastEventID, and
	// returns the head of channels at the time of the call (see Head).
	// Events a live subscription delivers with Seq at or before head.Seq
	// were covered by the replay.
	//
	// When lastEventID is unknown, when events after it on one of channels
	// have been evicted, or when it is ambiguous, Replay returns the head
	// with an error wrapping ErrUnknownID: the subscriber resets and
	// resumes from head. An id is ambiguous when it names more than one
	// retained event of channels (a publisher reused it), or names a
	// retained event while also standing for another position the broker
	// issued (a publisher's id that looks like the broker's own). Replay
	// never guesses which event the client saw, since a wrong guess would
	// skip events. It usually finds out before calling fn; a broker that
	// reads history in pages may find events evicted after it has called fn
	// for some, and the caller must then drop those.
	Replay(ctx context.Context, channels []string, lastEventID string, fn func(*Event) error) (head Cursor, err error)

	// Head returns the position of channels now: replaying channels after
	// head.ID yields exactly the events published on them after the call.
	// It depends only on channels and the clock, never on events of other
	// channels, so that a reader learns nothing about channels it cannot
	// see. A zero Cursor means the broker has no position to offer.
	Head(ctx context.Context, channels []string) (Cursor, error)
}

// Cursor is a position in a broker's event order: the id a client resumes
// from, and the Seq it stands for.
type Cursor struct {
	ID  string
	Seq uint64
	// Channels holds the position of each channel, the Seq of the last
	// event covered on it, for a broker whose Seq orders events per channel
	// only (ChannelOrderer). Nil otherwise.
	Channels map[string]uint64
}

// A Checker is a Broker that can tell whether it works right now: the
// connection answers and live subscriptions are delivering. The Hub's
// readiness check calls it when the broker has it.
type Checker interface {
	Check(ctx context.Context) error
}
