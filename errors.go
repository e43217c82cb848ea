package ssehub

import "errors"

// Errors returned by the library. Callers match them with errors.Is; the
// returned errors usually wrap these with the offending value.
var (
	// ErrInvalidChannel means a channel name is empty, too long, or holds a
	// character outside the allowed set (see ValidChannel).
	ErrInvalidChannel = errors.New("ssehub: invalid channel name")
	// ErrInvalidID means an event id holds CR, LF or NUL, is not valid
	// UTF-8, or is longer than MaxIDLen.
	ErrInvalidID = errors.New("ssehub: invalid event id")
	// ErrInvalidType means an event type holds CR, LF or NUL, is not valid
	// UTF-8, is longer than MaxTypeLen, or uses the reserved "ssehub." prefix.
	ErrInvalidType = errors.New("ssehub: invalid event type")
	// ErrInvalidRetry means a retry is negative.
	ErrInvalidRetry = errors.New("ssehub: invalid retry")
	// ErrInvalidData means a message's data is missing or not valid UTF-8 JSON.
	ErrInvalidData = errors.New("ssehub: invalid data")
	// ErrMessageTooLarge means a message is larger than the configured limit.
	ErrMessageTooLarge = errors.New("ssehub: message too large")
	// ErrTooManyChannels means a subscription asked for more channels than allowed.
	ErrTooManyChannels = errors.New("ssehub: too many channels")
	// ErrClosed is returned by every call on a Hub or Broker that has been closed.
	ErrClosed = errors.New("ssehub: closed")
	// ErrSlowSubscriber is why a stream ends when its client took no data
	// for Config.WriteTimeout. The client is expected to reconnect and
	// resume from its last event id.
	ErrSlowSubscriber = errors.New("ssehub: subscriber too slow")
	// ErrUnknownID is returned by a Replayer when the last event id is unknown
	// or events after it have already been evicted from history.
	ErrUnknownID = errors.New("ssehub: unknown or evicted last event id")
	// ErrBadRequest means a request body is not a JSON object of the
	// expected shape.
	ErrBadRequest = errors.New("ssehub: bad request")
	// ErrUnavailable means the broker cannot be reached right now, or
	// confirmed that it did not store the message: it was not published
	// and may be sent again.
	ErrUnavailable = errors.New("ssehub: broker unavailable")
	// ErrOutcomeUnknown means the broker did not confirm a publish in time
	// and could not tell whether it stored it: the event may or may not
	// reach subscribers. Sending the message again with the same
	// idempotency key publishes it at most once.
	ErrOutcomeUnknown = errors.New("ssehub: publish outcome unknown")
	// ErrInvalidIdempotencyKey means an idempotency key is longer than
	// MaxIdempotencyKeyLen or holds a character other than printable ASCII.
	ErrInvalidIdempotencyKey = errors.New("ssehub: invalid idempotency key")
	// ErrIdempotencyKeyReused means an idempotency key came with a message
	// other than the one first published with it.
	ErrIdempotencyKeyReused = errors.New("ssehub: idempotency key reused for another message")
	// ErrUnauthorized means a request needs a credential and carries none,
	// or carries one that is not valid: malformed, expired, not yet valid,
	// or signed with another key or algorithm.
	ErrUnauthorized = errors.New("ssehub: unauthorized")
	// ErrForbidden means a request's credential is valid but does not allow
	// what the request asks for.
	ErrForbidden = errors.New("ssehub: forbidden")
	// ErrTooManyConnections means the hub already serves as many streams as
	// it allows, in total or to the client's address.
	ErrTooManyConnections = errors.New("ssehub: too many connections")
	// ErrRequestTimeout means a request body did not arrive within
	// Config.ReadTimeout.
	ErrRequestTimeout = errors.New("ssehub: request body timeout")
	// ErrInvalidOrigin means a web origin given to CORS is not a scheme and
	// host with an optional port.
	ErrInvalidOrigin = errors.New("ssehub: invalid origin")
)
