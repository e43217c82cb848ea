// Package natsbroker is an ssehub.Broker on NATS JetStream, so that several
// hub processes share channels and a replicated history: an event published
// on one hub reaches the subscribers of every hub, a client resumes with
// Last-Event-ID on any hub, and a JetStream cluster can lose a node without
// losing an event it acknowledged.
//
// # Stream and subjects
//
// Events live in one JetStream stream, Options.Stream ("SSEHUB"), on the
// subjects <Options.Subject>.<channel> ("ssehub.news"). A "." in a channel
// name is written "~" in the subject, so that every channel is one subject
// token: channel "orders.eu" is subject "ssehub.orders~eu". The stream gives
// each event its sequence number, one order across all channels, so a
// client subscribed to several channels resumes exactly from one id.
//
// The stream's limits bound the history: per subject (channel) one event
// more than Options.HistorySize, events older than Options.HistoryAge, and
// Options.HistoryBytes in all. New creates nothing; the first call that needs
// the stream creates it when it is missing, with Options.Replicas copies
// (3 when the client sees a cluster of 3 or more servers, else 1), and
// otherwise brings its limits to the options unless Options.KeepStream is
// set.
//
// A message's body is the event's data, JSON; its headers carry the rest:
// Ssehub-Type, Ssehub-Id (an id the publisher chose) and Ssehub-Retry. Any
// NATS client may publish events on the stream's subjects in that form;
// one whose body is not JSON, or whose headers would break the stream, is
// skipped and logged.
//
// # Ids
//
// An event published without an id gets its sequence number in the
// stream, encrypted (see ids.go): the number counts the events of every
// channel, which a reader of one channel must not learn. Positions (a new
// stream's, a reset's) are encrypted too, and differ at every call. An id
// from a deleted stream stands for no position in a new one. An id the
// publisher chose is sent as given; a second stream, <Stream>_IDS, maps it
// to the event's position so that a client can resume from it too, and
// tells a reused id (ambiguous: a resume from it gets a reset) from one
// used once.
//
// # Live delivery
//
// Each Broker runs one JetStream consumer over the whole stream: an
// ephemeral, ordered push consumer with flow control and idle heartbeats.
// Local subscriptions are reference-counted per channel, and the events of
// channels nobody on this hub subscribes to are dropped on arrival. One
// consumer per hub, rather than one per channel, makes a new channel's
// subscription free (no request to the server) and keeps a node failure
// to one consumer to recreate per hub; docs/benchmarks.md has the figures.
//
// The consumer is recreated from the last sequence number delivered when
// its messages skip a number, when its heartbeats stop, when the
// connection comes back, or when it delivers nothing while the stream's
// leader holds more (a probe every five heartbeats), so no event is
// delivered twice or missed. When
// the stream no longer holds events a channel missed (history limits), the
// channel's subscribers get an ssehub.ResetType event instead.
//
// # Failures
//
// Publish waits for the stream's acknowledgement, which a clustered stream
// gives once a majority of its replicas has the event. It retries until
// its context ends, with the same message id (the message's idempotency
// key, or a random one), which JetStream uses to store the event once.
// It fails with an error wrapping ssehub.ErrUnavailable when no server
// took the event, and ssehub.ErrOutcomeUnknown when an attempt went out
// unanswered. Check reports a connection that is down, a consumer that
// does not deliver, and a stream without leader.
package natsbroker

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/ssehub/ssehub"
)

// Defaults for Options fields left at zero.
const (
	DefaultStream         = "SSEHUB"
	DefaultPublishTimeout = 10 * time.Second
	DefaultHeartbeat      = time.Second
)

// Header names of the event fields other than data.
const (
	HeaderType  = "Ssehub-Type"
	HeaderID    = "Ssehub-Id"
	HeaderRetry = "Ssehub-Retry"
)

// Options configures a Broker. The zero value is ready to use.
type Options struct {
	// Stream is the name of the JetStream stream of events. Empty means
	// DefaultStream.
	Stream string
	// Subject starts the subject of every event: <Subject>.<channel>.
	// Empty means Stream in lower case.
	Subject string
	// Replicas is how many servers keep the stream. Zero means 3 when the
	// connection knows 3 servers or more of a cluster, else 1. It applies
	// when the broker creates the stream, and to an existing stream only
	// when set.
	Replicas int
	// HistorySize is how many events of each channel stay replayable.
	// Zero means ssehub.DefaultHistorySize; negative keeps no history to
	// replay, so every resume gets a reset.
	HistorySize int
	// HistoryAge is how long an event stays replayable. Zero means
	// ssehub.DefaultHistoryAge; negative keeps events until HistorySize or
	// HistoryBytes remove them.
	HistoryAge time.Duration
	// HistoryBytes bounds the size of the stream, per replica: past it,
	// the oldest events of any channel go first. JetStream has no bound
	// per channel in bytes; a channel's history is bounded by HistorySize
	// events. Zero means ssehub.DefaultHistoryBytes; negative means no
	// bound.
	HistoryBytes int64
	// KeepStream makes the broker use an existing stream as it is
	// configured, rather than bringing its limits to these options. A
	// process that only publishes sets it.
	KeepStream bool
	// PublishTimeout bounds how long Publish waits for an acknowledgement,
	// retries included, when ctx allows longer. Zero means
	// DefaultPublishTimeout.
	PublishTimeout time.Duration
	// IdempotencyWindow is how long the stream remembers message ids, and
	// so how long a message sent again with its idempotency key is not
	// published again. It applies when the broker creates or updates the
	// stream, and is at most HistoryAge. Zero means
	// ssehub.DefaultIdempotencyWindow.
	IdempotencyWindow time.Duration
	// Heartbeat is the idle heartbeat of the consumer: when none arrives
	// for three of them, the consumer is recreated. Zero means
	// DefaultHeartbeat.
	Heartbeat time.Duration
	// Logger receives consumer changes and skipped messages. Nil discards
	// them.
	Logger *slog.Logger
	// Metrics counts failed calls to NATS, lost consumers and recoveries
	// (package promhub implements it). Nil counts nothing.
	Metrics ssehub.BrokerMetrics
}

// Broker is an ssehub.Broker, ssehub.Replayer and ssehub.Checker on NATS
// JetStream. Its methods are safe for concurrent use.
type Broker struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	stream    string
	idsStream string
	subject   string // events are <subject>.<token>
	idsSubj   string // id index entries are <idsSubj>.<key>
	replicas  int    // 0: pick from the cluster size
	size      int    // <= 0: no history
	age       time.Duration
	maxBytes  int64
	keep      bool
	pubWait   time.Duration
	keyWindow time.Duration
	hb        time.Duration
	log       *slog.Logger
	metrics   ssehub.BrokerMetrics // never nil

	ensureMu sync.Mutex                  // one ensureStreams at a time
	st       atomic.Pointer[streamState] // nil until the streams are known
	// connectedAt is when the connection was last seen up, in Unix
	// nanoseconds: Publish fails at once after a long outage.
	connectedAt atomic.Int64

	mu       sync.Mutex
	closed   bool
	started  bool
	channels map[string]*channel
	cur      *consumer // the consumer in use, or nil
	gen      uint64    // generation of the latest consumer
	up       bool      // the consumer delivers
	upCh     chan struct{}
	downErr  error  // why the last attempt to create the consumer failed
	lost     bool   // the consumer was lost since it was last up
	seen     uint64 // every event up to seen has been delivered
	seenTag  string // the stream incarnation seen belongs to
	// fromFirst: the next consumer starts at the stream's first event,
	// the stream having been created again.
	fromFirst bool

	reset     chan struct{} // asks the run loop to recreate the consumer
	done      chan struct{} // closed by Close
	ctx       context.Context
	cancelCtx context.CancelFunc
	wg        sync.WaitGroup
}

// streamState is what the broker knows of its streams.
type streamState struct {
	ids *idCodec // of this incarnation of the stream
	// perSubject is the stream's limit of messages per subject; <= 0
	// means none.
	perSubject int64
}

// channel is one channel this hub subscribes to, with its local
// subscriptions.
type channel struct {
	name string
	subs []*sub
}

type sub struct{ deliver func(*ssehub.Event) }

var (
	_ ssehub.Broker   = (*Broker)(nil)
	_ ssehub.Replayer = (*Broker)(nil)
	_ ssehub.Checker  = (*Broker)(nil)
)

// New returns a Broker that uses nc. The Broker does not close nc; close
// it after the Broker. New does not talk to the server: the first call
// that needs the stream creates or checks it, and the first Subscribe
// starts the consumer, which is then kept, and recreated when it fails,
// until Close.
//
// For the broker to ride out a server's loss, nc should reconnect for
// ever (nats.MaxReconnects(-1)) and not buffer while reconnecting
// (nats.ReconnectBufSize(-1)), so that a publish to a dead connection
// fails at once and is retried on the next one.
func New(nc *nats.Conn, opts Options) (*Broker, error) {
	if nc == nil {
		return nil, errors.New("natsbroker: nil connection")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("natsbroker: %w", err)
	}
	b := &Broker{
		nc:        nc,
		js:        js,
		stream:    opts.Stream,
		subject:   opts.Subject,
		replicas:  opts.Replicas,
		size:      opts.HistorySize,
		age:       opts.HistoryAge,
		maxBytes:  opts.HistoryBytes,
		keep:      opts.KeepStream,
		pubWait:   opts.PublishTimeout,
		keyWindow: opts.IdempotencyWindow,
		hb:        opts.Heartbeat,
		log:       opts.Logger,
		metrics:   opts.Metrics,
		channels:  map[string]*channel{},
		upCh:      make(chan struct{}),
		reset:     make(chan struct{}, 1),
		done:      make(chan struct{}),
	}
	if b.stream == "" {
		b.stream = DefaultStream
	}
	if !validName(b.stream) {
		return nil, fmt.Errorf("natsbroker: stream name %q: use A-Z a-z 0-9 - _", b.stream)
	}
	if b.subject == "" {
		b.subject = strings.ToLower(b.stream)
	}
	if !validSubjectPrefix(b.subject) {
		return nil, fmt.Errorf("natsbroker: subject %q is not a NATS subject without wildcards", b.subject)
	}
	b.idsStream = b.stream + "_IDS"
	b.idsSubj = b.subject + "-ids"
	if b.replicas < 0 || b.replicas > 5 {
		return nil, fmt.Errorf("natsbroker: %d replicas; JetStream allows 1 to 5", b.replicas)
	}
	if b.size == 0 {
		b.size = ssehub.DefaultHistorySize
	}
	if b.age == 0 {
		b.age = ssehub.DefaultHistoryAge
	}
	if b.maxBytes == 0 {
		b.maxBytes = ssehub.DefaultHistoryBytes
	}
	if b.pubWait <= 0 {
		b.pubWait = DefaultPublishTimeout
	}
	if b.keyWindow <= 0 {
		b.keyWindow = ssehub.DefaultIdempotencyWindow
	}
	if b.hb <= 0 {
		b.hb = DefaultHeartbeat
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.metrics == nil {
		b.metrics = noMetrics{}
	}
	b.ctx, b.cancelCtx = context.WithCancel(context.Background())
	b.connectedAt.Store(time.Now().UnixNano())
	return b, nil
}

// validName reports whether s may name a JetStream stream.
func validName(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// validSubjectPrefix reports whether s is a subject of non-empty tokens
// without wildcards or white space.
func validSubjectPrefix(s string) bool {
	if s == "" || len(s) > 200 {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if tok == "" || strings.ContainsAny(tok, "*> \t\r\n") {
			return false
		}
	}
	return true
}

// subjectOf returns the subject of a channel's events.
func (b *Broker) subjectOf(channel string) string {
	return b.subject + "." + strings.ReplaceAll(channel, ".", "~")
}

// channelOf returns the channel of an event's subject, or "" when the
// subject is not one of the broker's.
func (b *Broker) channelOf(subject string) string {
	tok, ok := strings.CutPrefix(subject, b.subject)
	if !ok || len(tok) < 2 || tok[0] != '.' {
		return ""
	}
	return strings.ReplaceAll(tok[1:], "~", ".")
}

// position returns a cursor at seq, with an id that reveals nothing.
func (st *streamState) position(seq uint64) ssehub.Cursor {
	return ssehub.Cursor{ID: st.ids.position(seq), Seq: seq}
}

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ssehub.ErrUnavailable, op, err)
}

// HeaderSum is the header of a message published with an idempotency key:
// a digest of the message, so that the key sent again with another
// message is refused rather than taken for a retry.
const HeaderSum = "Ssehub-Sum"

// Publish implements ssehub.Broker. It returns once the stream has
// acknowledged the event: a majority of its replicas hold it.
//
// Each publish carries a message id, which JetStream remembers for the
// idempotency window: the message's idempotency key, or a random id. An
// attempt that gets no answer is sent again with the same id until ctx
// ends or Options.PublishTimeout passes, so a retry stores nothing twice.
// A message sent again with a key the stream remembers returns the event
// published then, or an error wrapping ssehub.ErrIdempotencyKeyReused when
// the message differs; once that event has left the stream, the broker
// cannot compare, and takes the message for the same.
//
// An error wrapping ssehub.ErrUnavailable means the event was not stored:
// no server took it. One wrapping ssehub.ErrOutcomeUnknown means an
// attempt went unanswered and it may have been.
func (b *Broker) Publish(ctx context.Context, m ssehub.Message) (*ssehub.Event, error) {
	if b.isClosed() {
		return nil, ssehub.ErrClosed
	}
	op := fmt.Sprintf("publish on %q", m.Channel)
	if err := ctx.Err(); err != nil {
		return nil, unavailable(op, err)
	}
	ctx, cancel := context.WithTimeout(ctx, b.pubWait)
	defer cancel()
	msg := &nats.Msg{Subject: b.subjectOf(m.Channel), Data: m.Data, Header: nats.Header{}}
	if m.Type != "" {
		msg.Header.Set(HeaderType, m.Type)
	}
	if m.ID != "" {
		msg.Header.Set(HeaderID, m.ID)
	}
	if m.Retry != 0 {
		msg.Header.Set(HeaderRetry, strconv.Itoa(m.Retry))
	}
	msgID := "r:" + newMsgID()
	if m.IdempotencyKey != "" {
		msgID = "k:" + m.IdempotencyKey
		msg.Header.Set(HeaderSum, messageSum(m))
	}
	msg.Header.Set(jetstream.MsgIDHeader, msgID)
	msg.Header.Set(jetstream.ExpectedStreamHeader, b.stream)
	st, ack, sent, err := b.publish(ctx, msg)
	if err != nil {
		switch {
		case errors.Is(err, nats.ErrMaxPayload):
			return nil, fmt.Errorf("%w: %d bytes over the server's limit of %d", ssehub.ErrMessageTooLarge, len(m.Data), b.nc.MaxPayload())
		case sent:
			b.metrics.BrokerError()
			return nil, fmt.Errorf("%w: %s: %w", ssehub.ErrOutcomeUnknown, op, err)
		case errors.Is(err, ssehub.ErrUnavailable):
			return nil, err // from streams, which counted it
		}
		b.metrics.BrokerError()
		return nil, unavailable(op, err)
	}
	if ack.Duplicate && m.IdempotencyKey != "" {
		if err := b.sameMessage(ctx, ack.Sequence, msg); err != nil {
			return nil, fmt.Errorf("%w: %q", err, m.IdempotencyKey)
		}
	}
	id := m.ID
	if id == "" {
		id = st.ids.event(ack.Sequence)
	} else {
		b.index(ctx, st, m.Channel, m.ID, ack.Sequence, msgID)
	}
	return ssehub.NewEvent(m.Channel, id, m.Type, m.Data, m.Retry, ack.Sequence, time.Now()), nil
}

// messageSum digests what makes m the message it is, for HeaderSum.
func messageSum(m ssehub.Message) string {
	h := sha256.New()
	var n [8]byte
	for _, s := range []string{m.Channel, m.Type, m.ID, string(m.Data)} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	binary.BigEndian.PutUint64(n[:], uint64(m.Retry))
	h.Write(n[:])
	return base64.RawURLEncoding.EncodeToString(h.Sum(nil)[:18])
}

// sameMessage checks that the event at seq, which JetStream says msg
// duplicates, is msg and not another message published with its key.
func (b *Broker) sameMessage(ctx context.Context, seq uint64, msg *nats.Msg) error {
	first, err := b.getMsg(ctx, b.stream, msgGetRequest{Seq: seq})
	if err != nil || first == nil {
		// It cannot tell: the event has left the stream, or the leader
		// does not answer. A key sent again is much more often a retry
		// than a mistake.
		return nil
	}
	h, err := first.header()
	if err != nil || h.Get(HeaderSum) != msg.Header.Get(HeaderSum) || first.Subject != msg.Subject {
		return ssehub.ErrIdempotencyKeyReused
	}
	return nil
}

// publish sends msg to the events stream and waits for the
// acknowledgement, trying again until ctx ends while no server answers.
// sent reports whether an attempt may have reached the stream unanswered.
// When nothing stores the subject, the stream may have been deleted: the
// next attempt checks for it, and creates it again.
func (b *Broker) publish(ctx context.Context, msg *nats.Msg) (st *streamState, ack *jetstream.PubAck, sent bool, err error) {
	delay := minBackoff
	for {
		st, err = b.streams(ctx)
		if err != nil {
			return nil, nil, sent, err
		}
		ack, err = b.attempt(ctx, msg)
		if err == nil {
			return st, ack, false, nil
		}
		if unanswered(err) {
			sent = true
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) {
			b.checkStream(ctx, st)
		}
		if !retryable(err) || ctx.Err() != nil {
			return nil, nil, sent, err
		}
		select {
		case <-ctx.Done():
			return nil, nil, sent, err
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// unanswered reports whether a failed attempt may have been stored: it
// went out and no answer came back.
func unanswered(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr), errors.Is(err, errDown),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrReconnectBufExceeded),
		errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrInvalidConnection):
		return false
	}
	return true
}

// checkStream forgets st when the stream is gone: nothing stores the
// subject, and the stream is not found. While the stream elects a leader
// nothing stores the subject either, and then it is still there.
func (b *Broker) checkStream(ctx context.Context, st *streamState) {
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	if _, err := b.js.Stream(ctx, b.stream); errors.Is(err, jetstream.ErrStreamNotFound) {
		b.st.CompareAndSwap(st, nil)
	}
}

// index records that the publisher's id on channel names the event at seq.
// A failure is logged: the event is published, and a client resuming from
// that id gets a reset.
func (b *Broker) index(ctx context.Context, st *streamState, channel, id string, seq uint64, msgID string) {
	msg := &nats.Msg{Subject: b.idsSubj + "." + indexKey(channel, id), Data: []byte(st.ids.event(seq)), Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, msgID+".id")
	msg.Header.Set(jetstream.ExpectedStreamHeader, b.idsStream)
	delay := minBackoff
	for {
		_, err := b.attempt(ctx, msg)
		if err == nil {
			return
		}
		if !retryable(err) || ctx.Err() != nil {
			b.metrics.BrokerError()
			b.log.LogAttrs(ctx, slog.LevelWarn, "natsbroker: could not index a publisher's id; resuming from it will reset",
				slog.String("channel", channel), slog.String("id", id), slog.String("error", err.Error()))
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(delay):
		}
		delay = min(2*delay, maxBackoff)
	}
}

// indexKey is the subject token of a channel's publisher id in the id
// index: 144 bits of SHA-256, which no subject rule can trip on.
func indexKey(channel, id string) string {
	return hashKey(channel + "\x00" + id)
}

func newMsgID() string {
	var r [16]byte
	rand.Read(r[:])
	return base64.RawURLEncoding.EncodeToString(r[:])
}

// Retry backoff of requests: it doubles from minBackoff up to maxBackoff.
const (
	minBackoff = 20 * time.Millisecond
	maxBackoff = 500 * time.Millisecond
	// attemptTimeout bounds one attempt of a request, so that a request
	// sent to a server that just died is sent again to another.
	attemptTimeout = time.Second
)

// attempt publishes msg once and waits for the acknowledgement.
func (b *Broker) attempt(ctx context.Context, msg *nats.Msg) (*jetstream.PubAck, error) {
	if err := b.connected(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, attemptTimeout)
	defer cancel()
	return b.js.PublishMsg(ctx, msg, jetstream.WithRetryAttempts(0))
}

// errDown means the connection has been down for longer than a publish
// may wait.
var errDown = errors.New("not connected to NATS")

// connected fails when the connection has been down for longer than a
// publish may wait, so that publishes during a long outage fail at once.
func (b *Broker) connected() error {
	now := time.Now()
	if b.nc.IsConnected() {
		b.connectedAt.Store(now.UnixNano())
		return nil
	}
	if b.nc.IsClosed() {
		return nats.ErrConnectionClosed
	}
	if down := now.Sub(time.Unix(0, b.connectedAt.Load())); down > b.pubWait {
		return fmt.Errorf("%w for %v", errDown, down.Round(time.Millisecond))
	}
	return nil
}

// noPeers is JetStream's error code for a stream it cannot place yet: a
// cluster that has just started does not know its servers' resources for
// a few seconds.
const noPeers = 10005

// retryable reports whether a failed request may succeed on another
// attempt: no answer, no server, a stream between leaders, or a cluster
// still starting.
func retryable(err error) bool {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr):
		return apiErr.Code == 503 || apiErr.Code == 408 || apiErr.ErrorCode == noPeers
	case errors.Is(err, ssehub.ErrUnavailable), errors.Is(err, errDown), errors.Is(err, errConfig), errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject), errors.Is(err, jetstream.ErrInvalidJSAck):
		return false
	}
	return true
}

// Head implements ssehub.Replayer: the stream's last sequence number. Its
// id is a position (see ids.go): it differs at every call and tells a
// reader nothing of the events of other channels, which the sequence
// number counts too; channels do not change it.
func (b *Broker) Head(ctx context.Context, channels []string) (ssehub.Cursor, error) {
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
	return st.position(info.State.LastSeq), nil
}

// info asks the stream's leader for the stream's state, with the count of
// messages on subject when it is not empty. It tries again while no server
// answers, or the stream has no leader, until Options.PublishTimeout.
func (b *Broker) info(ctx context.Context, st *streamState, subject string) (*jetstream.StreamInfo, error) {
	var req []byte
	if subject != "" {
		req, _ = json.Marshal(map[string]string{"subjects_filter": subject})
	}
	var info *jetstream.StreamInfo
	err := b.api(ctx, "$JS.API.STREAM.INFO."+b.stream, req, func(data []byte) error {
		var out struct {
			jetstream.StreamInfo
			Error *jetstream.APIError `json:"error"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return fmt.Errorf("answer: %w", err)
		}
		if out.Error != nil {
			return out.Error
		}
		info = &out.StreamInfo
		return nil
	})
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound {
			b.st.CompareAndSwap(st, nil)
		}
		return nil, unavailable("stream info", err)
	}
	return info, nil
}

// Check implements ssehub.Checker: it fails while the connection is down,
// while the consumer is not in place or has stopped delivering, and when
// the stream does not answer. Before the first Subscribe, only the stream
// counts.
func (b *Broker) Check(ctx context.Context) error {
	b.mu.Lock()
	closed, started, up, downErr, cur := b.closed, b.started, b.up, b.downErr, b.cur
	b.mu.Unlock()
	switch {
	case closed:
		return ssehub.ErrClosed
	case !b.nc.IsConnected():
		return fmt.Errorf("%w: not connected to NATS (%s)", ssehub.ErrUnavailable, strings.ToLower(b.nc.Status().String()))
	case !started:
	case !up && downErr != nil:
		return unavailable("consumer", downErr)
	case !up:
		return fmt.Errorf("%w: consumer not in place yet", ssehub.ErrUnavailable)
	case cur != nil && cur.silentFor(time.Now()) > 3*b.hb:
		return fmt.Errorf("%w: consumer stopped delivering", ssehub.ErrUnavailable)
	}
	st, err := b.streams(ctx)
	if err != nil {
		return err
	}
	_, err = b.info(ctx, st, "")
	return err
}

// Close implements ssehub.Broker. It ends the consumer and waits for the
// broker's goroutines, or for ctx. It does not close the connection.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ssehub.ErrClosed
	}
	b.closed = true
	b.mu.Unlock()
	close(b.done)
	b.cancelCtx()
	finished := make(chan struct{})
	go func() { b.wg.Wait(); close(finished) }()
	select {
	case <-finished:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *Broker) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// noMetrics is the ssehub.BrokerMetrics of a Broker given none.
type noMetrics struct{}

func (noMetrics) BrokerError()       {}
func (noMetrics) BrokerReconnected() {}
