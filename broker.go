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
	// it. An error wrapping ErrUnavailable means nothing was published.
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
	// returns the broker's head: the latest position at the time of the
	// call. Events a live subscription delivers with Seq at or before
	// head.Seq were covered by the replay.
	//
	// When lastEventID is unknown, or events after it on one of channels
	// have been evicted, Replay calls fn for nothing and returns the head
	// with an error wrapping ErrUnknownID: the subscriber resumes from head.
	Replay(ctx context.Context, channels []string, lastEventID string, fn func(*Event) error) (head Cursor, err error)

	// Head returns the broker's latest position: replaying after head.ID
	// yields exactly the events published after the call. A zero Cursor
	// means the broker has no position to offer yet.
	Head(ctx context.Context) (Cursor, error)
}

// Cursor is a position in a broker's event order: the id a client resumes
// from, and the Seq it stands for.
type Cursor struct {
	ID  string
	Seq uint64
}

// A Checker is a Broker that can tell whether it works right now: the
// connection answers and live subscriptions are delivering. The Hub's
// readiness check calls it when the broker has it.
type Checker interface {
	Check(ctx context.Context) error
}
