// Package redisbroker is an ssehub.Broker on Redis, so that several hub
// processes share channels and history: an event published on one hub
// reaches the subscribers of every hub, and a client can resume with
// Last-Event-ID on any hub, also after a hub restarts.
//
// Live traffic goes through Redis pub/sub on the plain channel name. Each
// Broker holds one pub/sub connection (on Redis Cluster, one per master;
// see below), shared by all the channels its hub subscribes; other
// commands use the client's pool. History lives in one
// Redis stream per channel, bounded by count, age and bytes. A Lua script
// assigns each event its sequence number, appends it to the stream and
// publishes it in one atomic step, so a subscriber never sees an event that
// a replay would not find, nor the other way round. Replays read the
// streams in bounded pages, a few replays at a time (Options.MaxReplays).
//
// # Ids
//
// Sequence numbers come from one counter in Redis shared by all channels:
// seq = max(last+1, Redis TIME in microseconds). An event published
// without an id gets seq as its id, written as 16 decimal digits, the
// scheme ssehub.MemoryBroker uses; such ids sort in publish order. An id
// the publisher chose is sent as given and kept in a per-channel index, so
// a client can resume from it too. An id that names more than one retained
// event, or a retained event and another seq, is ambiguous: a resume from
// it gets a reset.
//
// # Envelopes and other publishers
//
// A message on a channel is a JSON object. What this broker publishes is
//
//	{"data":<compact JSON>,"event":<type or null>,"retry":<ms or null>,"id":"<id>","ssehub_seq":<seq>}
//
// which invenio-sse's Python subscriber reads as its own (it uses data,
// event, id and retry and ignores other keys). The "ssehub_seq" key is what
// marks an envelope as this broker's. With Options.Envelope
// EnvelopeFlaskSSE the channel gets flask-sse's message instead, and the
// envelope goes to the channel's twin, the pub/sub channel
// "<prefix>#<channel>" that hubs subscribe with it.
//
// Messages without it come from another publisher, invenio-sse or
// flask-sse. They are read as Python's json.loads reads them and streamed
// as those libraries' views stream them, and taken into the channel's
// history once, whatever the number of hubs, with a sequence number like
// any event; docs/redis.md tells how. A message whose fields
// would break the stream (a line break in an id or type, data that is not
// JSON, no data key) is dropped and logged.
//
// # Failures
//
// Every publish carries an idempotency key, which the publish script
// remembers: go-redis sending the script again, or a client sending the
// message again with its key, publishes nothing more. When Redis cannot
// be reached, or confirms that a publish whose answer was lost did not
// happen, Publish fails with an error wrapping ssehub.ErrUnavailable; when
// Redis does not answer in time, with one wrapping ssehub.ErrOutcomeUnknown.
// Publishes made at once share a round trip: their script calls go to
// Redis as one pipeline. Redis replicates asynchronously; with
// Options.WaitReplicas a publish also waits until that many replicas hold
// the event (WAIT), and fails with an error wrapping ssehub.ErrOutcomeUnknown
// and ErrNotReplicated when they do not confirm it in time.
// Check reports an unreachable Redis, and the broker reconnects with
// backoff and subscribes all its channels again by itself. Events
// published while its subscription was down are then read from the
// streams and delivered, in order, before live ones; when they are no
// longer there (Redis lost its data, or trimmed them), subscribers of the
// channel get an ssehub.ResetType event instead, followed by the events
// Redis still has that they have not seen (those published since Redis
// came back empty); the reset's id is the position just before them. A watchdog publishes a
// canary on a private channel every CanaryInterval and rebuilds the
// subscription when a canary does not come back, which catches a
// connection that looks fine but no longer delivers.
//
// With go-redis's failover client (Redis Sentinel), the broker follows the
// master the sentinels promote. Redis replicates asynchronously, so the
// new master may lack the last events the old one acknowledged. When its
// subscription connects again, and before a publish on a connection the
// client opened anew, the broker asks Redis for the last event it
// delivered on each channel and the last one it published on each
// channel; an event that is gone without having been trimmed was lost.
// The broker records the loss, so that a resume from before it gets a
// reset, tells the other hubs on the channel's twin, and gives the
// channel's subscribers a reset followed by the events after the loss.
// It also raises the counter past every seq it saw (rewind.go).
//
// # Redis Cluster
//
// All keys start with Options.Prefix. With a *redis.ClusterClient, the
// broker spreads channels over the cluster's shards instead of keeping
// state shared by all channels: every key of a channel is
// "<prefix>{<channel>}...", in the channel's hash slot, with its own
// sequence counter (seq = max(last+1, TIME of its master)), history bound
// and idempotency keys; the publish script runs on the channel's master and
// publishes with SPUBLISH. The broker holds one sharded pub/sub connection
// per master that owns channels it subscribes, catches each channel up on
// its own after a reconnection, follows failovers and moved slots, and
// reads messages of other publishers, which PUBLISH to every node, on one
// plain connection (cluster.go). Since channels are numbered on their own,
// the broker is an ssehub.ChannelOrderer: Replay and Head over several
// channels take and give a position per channel (ssehub.FormatPositions).
// A failover that lost events a hub had delivered gives the channel's
// subscribers a reset (lost.lua). The prefix must not hold a hash tag, and
// EnvelopeFlaskSSE is refused: Python readers do not subscribe sharded
// channels.
package redisbroker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/ssehub/ssehub"
)

// Defaults for Options fields left at zero.
const (
	DefaultPrefix             = "ssehub:"
	DefaultCanaryInterval     = 5 * time.Second
	DefaultMaxReplays         = 4
	DefaultMaxIdempotencyKeys = 250_000
	DefaultWaitTimeout        = time.Second
)

// Options configures a Broker. The zero value is ready to use.
type Options struct {
	// Prefix starts the name of every key the broker uses. Empty means
	// DefaultPrefix.
	Prefix string
	// HistorySize is how many events each channel's stream keeps for
	// replay. Zero means ssehub.DefaultHistorySize; negative keeps no
	// history, so every resume gets a reset.
	HistorySize int
	// HistoryAge is how long an event stays replayable; a channel with no
	// event for that long is dropped entirely. Zero means
	// ssehub.DefaultHistoryAge; negative keeps events until HistorySize
	// trims them.
	HistoryAge time.Duration
	// HistoryBytes bounds what the streams of all channels hold together:
	// the envelopes, plus about 80 bytes of Redis bookkeeping per event.
	// Past it, the oldest events are trimmed first, whatever their channel.
	// Zero means ssehub.DefaultHistoryBytes; negative means no bound.
	HistoryBytes int64
	// ChannelHistoryBytes bounds what one channel's stream holds, so that
	// one busy channel cannot take all of HistoryBytes. Zero means a
	// quarter of HistoryBytes; negative means no bound. The latest event of
	// a channel is kept whatever its size.
	ChannelHistoryBytes int64
	// MaxReplays bounds how many replays (resumes with Last-Event-ID) the
	// broker runs at once. Further ones wait their turn, as long as their
	// context allows, so that clients resuming together cannot keep Redis
	// busy for the others. Zero means DefaultMaxReplays; negative means no
	// bound.
	MaxReplays int
	// IdempotencyWindow is how long Redis remembers a publish's
	// idempotency key (ssehub.Message.IdempotencyKey). Zero means
	// ssehub.DefaultIdempotencyWindow. A publish without a key gets one the
	// broker makes, remembered for a shorter time, so that go-redis
	// retrying a publish never publishes it twice.
	IdempotencyWindow time.Duration
	// MaxIdempotencyKeys bounds how many keys Redis remembers over all
	// channels, about 200 bytes each; past it the oldest are forgotten
	// first. Zero means DefaultMaxIdempotencyKeys.
	MaxIdempotencyKeys int
	// CanaryInterval is how often the watchdog checks that the
	// subscription delivers. Zero means DefaultCanaryInterval; negative
	// disables the watchdog.
	CanaryInterval time.Duration
	// Logger receives connection changes and dropped foreign messages. Nil
	// discards them.
	Logger *slog.Logger
	// Metrics counts failed calls to Redis, lost subscriptions and
	// reconnections (package promhub implements it). Nil counts nothing.
	Metrics ssehub.BrokerMetrics
	// Envelope is the shape of what Publish puts on a channel, for the
	// Python readers that share the Redis: EnvelopeInvenio (the default)
	// or EnvelopeFlaskSSE. Every hub reads both.
	Envelope string
	// WaitReplicas is how many replicas must confirm that they hold a
	// published event before Publish returns it: the publish script is
	// followed by WAIT on the same connection, one WAIT for all the
	// publishes that went in one pipeline. When fewer confirm within
	// WaitTimeout, Publish fails with an error wrapping
	// ssehub.ErrOutcomeUnknown: the event is published, and sending it
	// again with the same idempotency key publishes nothing more and waits
	// again. Zero waits for none: Redis replicates asynchronously, and an
	// event that a master acknowledged can be lost if it fails before a
	// replica copied it. A replica that confirmed can still lose it if it
	// is not the one promoted, or restarts without persistence.
	WaitReplicas int
	// WaitTimeout is how long WAIT waits for WaitReplicas; it must be
	// shorter than the client's ReadTimeout. Zero means DefaultWaitTimeout.
	WaitTimeout time.Duration
}

// Envelope shapes (Options.Envelope).
const (
	// EnvelopeInvenio publishes {"data", "event", "retry", "id",
	// "ssehub_seq"} on the channel: invenio-sse's reader takes it as its
	// own and ignores ssehub_seq. flask-sse's reader fails on it.
	EnvelopeInvenio = "invenio"
	// EnvelopeFlaskSSE publishes on the channel exactly the keys
	// flask-sse's reader accepts, {"data", "id", "retry", "type"}, and the
	// full envelope on the channel's twin, "<prefix>#<channel>", which hubs
	// subscribe with the channel. invenio-sse's reader takes it too (its
	// type then goes unread).
	EnvelopeFlaskSSE = "flask-sse"
)

// Broker is an ssehub.Broker, ssehub.Replayer and ssehub.Checker on Redis.
// Its methods are safe for concurrent use.
type Broker struct {
	client      redis.UniversalClient
	cluster     *redis.ClusterClient // non-nil on Redis Cluster (cluster.go)
	prefix      string
	flask       bool          // Options.Envelope is EnvelopeFlaskSSE
	size        int           // <= 0: no history
	age         time.Duration // <= 0: no age limit
	bytes       int64         // <= 0: no bound
	chanBytes   int64         // <= 0: no bound
	keyWindow   time.Duration
	maxKeys     int
	replays     chan struct{} // a token per replay running; nil: no bound
	canaryEvery time.Duration // <= 0: no watchdog
	canary      string        // private channel of the watchdog
	log         *slog.Logger
	metrics     ssehub.BrokerMetrics // never nil
	stateKey    string
	activeKey   string
	evictedKey  string
	firstKey    string
	bytesKey    string
	keysKey     string
	keyqKey     string
	lostKey     string

	// published is what the broker published lately, to check after a
	// failover (rewind.go); checking allows one such check at a time.
	published publishedRecord
	checking  sync.Mutex

	batch *batcher
	// WAIT after the publish script for waitReplicas replicas (none when
	// 0), waitTimeout at most.
	waitReplicas int
	waitTimeout  time.Duration

	// cmdMu keeps the SUBSCRIBE and UNSUBSCRIBE commands on the connection
	// in the order of the changes to channels they follow. Lock order:
	// cmdMu, then mu.
	cmdMu sync.Mutex

	mu       sync.Mutex
	closed   bool
	started  bool // the subscription runs
	channels map[string]*channel
	holding  map[*channel]struct{} // channels that hold foreign messages (foreign.go)
	ps       *redis.PubSub         // the current session's connection, or nil
	shards   map[string]*shard     // on Redis Cluster, the session of each master by address
	fps      *redis.PubSub         // on Redis Cluster, the plain subscription to other publishers
	pending  map[string][]*channel // per name, the channels whose SUBSCRIBE (nil: UNSUBSCRIBE) awaits its reply, in order
	up       bool                  // subscribed and caught up
	downErr  error                 // why the last attempt to subscribe failed
	lost     bool                  // a session failed since the subscription was last up
	seen     uint64                // every event up to seen on live channels has been delivered
	// heldBytes is the size of the messages all channels hold back while
	// they catch up, on Redis Cluster (cluster.go).
	heldBytes int
	// Watchdog state: the last canary token sent, when, and the last one
	// received.
	canaryWant, canaryGot uint64
	canarySent            time.Time

	done      chan struct{}   // closed by Close
	ctx       context.Context // cancelled by Close, to abort dialing
	cancelCtx context.CancelFunc
	wg        sync.WaitGroup
}

// channel is one Redis channel the broker subscribes, with the local
// subscriptions it feeds.
type channel struct {
	name      string
	subs      []*sub
	ready     chan struct{} // closed once first subscribed
	readyDone bool
	confirmed bool   // subscribed on the current connection
	live      bool   // has been subscribed on some connection
	last      uint64 // highest seq delivered
	// For lost events (rewind.go): the highest seq the subscriptions saw
	// or were told was lost, and the highest seq checked to be in Redis
	// or reset.
	told, checked uint64

	foreign foreignState // messages of other publishers (foreign.go)

	// On Redis Cluster (cluster.go): the session of the channel's shard;
	// the head when first subscribed, from which a catch-up starts until
	// an event is delivered; whether it is known; and, while the channel
	// catches up, the messages held back.
	shard     *shard
	base      uint64
	synced    bool
	syncing   bool
	held      []heldEvent
	heldBytes int // the size of held
}

type sub struct{ deliver func(*ssehub.Event) }

var (
	_ ssehub.Broker         = (*Broker)(nil)
	_ ssehub.Replayer       = (*Broker)(nil)
	_ ssehub.Checker        = (*Broker)(nil)
	_ ssehub.ChannelOrderer = (*Broker)(nil)
)

// New returns a Broker that uses client. The Broker does not close client;
// close it after the Broker. New does not connect: the first Subscribe
// opens the pub/sub connection, which is then kept, and restored when it
// fails, until Close.
func New(client redis.UniversalClient, opts Options) (*Broker, error) {
	if client == nil {
		return nil, errors.New("redisbroker: nil client")
	}
	switch opts.Envelope {
	case "", EnvelopeInvenio, EnvelopeFlaskSSE:
	default:
		return nil, fmt.Errorf("redisbroker: envelope %q: use %q or %q", opts.Envelope, EnvelopeInvenio, EnvelopeFlaskSSE)
	}
	cluster, _ := client.(*redis.ClusterClient)
	if cluster != nil {
		if strings.ContainsAny(opts.Prefix, "{}") {
			return nil, fmt.Errorf("redisbroker: prefix %q: on Redis Cluster the broker puts each channel in its own hash slot, so the prefix must not hold a hash tag ({ or })", opts.Prefix)
		}
		if opts.Envelope == EnvelopeFlaskSSE {
			return nil, errors.New("redisbroker: envelope flask-sse: on Redis Cluster events go out on sharded channels, which flask-sse's readers do not subscribe")
		}
	}
	wait, waitTimeout := opts.WaitReplicas, opts.WaitTimeout
	if waitTimeout == 0 {
		waitTimeout = DefaultWaitTimeout
	}
	switch {
	case wait < 0:
		return nil, fmt.Errorf("redisbroker: WaitReplicas %d: want 0 or more", wait)
	case waitTimeout < time.Millisecond:
		// WAIT takes milliseconds, and 0 would wait for ever.
		return nil, fmt.Errorf("redisbroker: WaitTimeout %s: want 1ms or more", waitTimeout)
	}
	if wait > 0 {
		// A pipeline's reads give up after the client's ReadTimeout,
		// whatever WAIT's own timeout (below 0: no timeout).
		var rt time.Duration
		switch c := client.(type) {
		case *redis.ClusterClient:
			rt = c.Options().ReadTimeout
		case *redis.Client:
			rt = c.Options().ReadTimeout
		}
		if rt > 0 && waitTimeout >= rt {
			return nil, fmt.Errorf("redisbroker: WaitTimeout %s: want less than the client's read timeout, %s", waitTimeout, rt)
		}
	}
	b := &Broker{
		client:      client,
		cluster:     cluster,
		prefix:      opts.Prefix,
		size:        opts.HistorySize,
		age:         opts.HistoryAge,
		canaryEvery: opts.CanaryInterval,
		log:         opts.Logger,
		metrics:     opts.Metrics,
		flask:       opts.Envelope == EnvelopeFlaskSSE,
		channels:    map[string]*channel{},
		done:        make(chan struct{}),
	}
	if b.prefix == "" {
		b.prefix = DefaultPrefix
	}
	if b.size == 0 {
		b.size = ssehub.DefaultHistorySize
	}
	if b.age == 0 {
		b.age = ssehub.DefaultHistoryAge
	}
	if b.canaryEvery == 0 {
		b.canaryEvery = DefaultCanaryInterval
	}
	b.bytes, b.chanBytes = opts.HistoryBytes, opts.ChannelHistoryBytes
	if b.bytes == 0 {
		b.bytes = ssehub.DefaultHistoryBytes
	}
	if b.chanBytes == 0 && b.bytes > 0 {
		b.chanBytes = max(b.bytes/4, 1)
	}
	b.keyWindow, b.maxKeys = opts.IdempotencyWindow, opts.MaxIdempotencyKeys
	if b.keyWindow <= 0 {
		b.keyWindow = ssehub.DefaultIdempotencyWindow
	}
	if b.maxKeys <= 0 {
		b.maxKeys = DefaultMaxIdempotencyKeys
	}
	switch n := opts.MaxReplays; {
	case n == 0:
		b.replays = make(chan struct{}, DefaultMaxReplays)
	case n > 0:
		b.replays = make(chan struct{}, n)
	}
	if b.log == nil {
		b.log = slog.New(slog.DiscardHandler)
	}
	if b.metrics == nil {
		b.metrics = noMetrics{}
	}
	b.waitReplicas, b.waitTimeout = wait, waitTimeout
	b.batch = &batcher{client: client, cluster: cluster, replicas: wait, timeout: waitTimeout}
	b.ctx, b.cancelCtx = context.WithCancel(context.Background())
	b.stateKey = b.prefix + "state"
	b.activeKey = b.prefix + "active"
	b.evictedKey = b.prefix + "evicted"
	b.firstKey = b.prefix + "first"
	b.bytesKey = b.prefix + "bytes"
	b.keysKey = b.prefix + "keys"
	b.keyqKey = b.prefix + "keyq"
	b.lostKey = b.prefix + "lost"
	// '#' cannot occur in an ssehub channel name, so no hub channel
	// collides with the canary's.
	b.canary = b.prefix + "canary#" + strconv.FormatUint(rand.Uint64(), 36)
	return b, nil
}

// start starts the subscription and its watchdog, once. A broker that
// only publishes never opens a pub/sub connection. b.mu must be held.
func (b *Broker) start() {
	if b.started || b.closed {
		return
	}
	b.started = true
	b.wg.Add(1)
	go b.expireHeld()
	if b.cluster != nil {
		b.startForeign()
		if b.canaryEvery > 0 {
			b.wg.Add(1)
			go b.watchCluster()
		}
		return
	}
	b.wg.Add(1)
	go b.run()
	if b.canaryEvery > 0 {
		b.wg.Add(1)
		go b.watch()
	}
}

// keyset names the keys and the twin of one channel.
type keyset struct {
	// prefix is the prefix of the channel's keys, as the scripts take it:
	// Options.Prefix, followed on a cluster by the channel's hash tag.
	prefix                                           string
	state, active, evicted, first, bytes, keys, keyq string
	stream, ids, notices, twin                       string
}

// keysOf returns the keys of channel. On one Redis the sequence counter,
// the indexes and the idempotency keys are shared by all channels; on a
// cluster each channel has its own, all in the channel's hash slot, which
// the hash tag "{channel}" right after the prefix selects: the slot of the
// key "P{c}state" is that of c, whose sharded pub/sub channel then lives on
// the same shard.
func (b *Broker) keysOf(channel string) keyset {
	p := b.prefix
	if b.cluster != nil {
		p = b.prefix + "{" + channel + "}"
	}
	return keyset{
		prefix: p,
		state:  p + "state", active: p + "active", evicted: p + "evicted", first: p + "first",
		bytes: p + "bytes", keys: p + "keys", keyq: p + "keyq",
		stream: p + "stream:" + channel, ids: p + "ids:" + channel, notices: p + "notices:" + channel,
		twin: p + "#" + channel,
	}
}

// twinOf returns the channel whose twin is the pub/sub channel name.
func (b *Broker) twinOf(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, b.prefix)
	if !ok {
		return "", false
	}
	if b.cluster == nil {
		return strings.CutPrefix(rest, "#")
	}
	rest, ok = strings.CutPrefix(rest, "{")
	if !ok {
		return "", false
	}
	tag, channel, ok := strings.Cut(rest, "}#")
	if !ok || tag != channel {
		return "", false
	}
	return channel, true
}

// FormatSeq returns the id the broker gives an event with sequence number
// seq when the publisher set none.
func FormatSeq(seq uint64) string { return fmt.Sprintf("%016d", seq) }

func unavailable(op string, err error) error {
	return fmt.Errorf("%w: %s: %w", ssehub.ErrUnavailable, op, err)
}

// Check implements ssehub.Checker: it fails while the subscription is not
// in place or has stopped delivering, or when Redis does not answer PING.
// Before the first Subscribe, only PING counts.
func (b *Broker) Check(ctx context.Context) error {
	b.mu.Lock()
	closed, started, up, downErr, overdue := b.closed, b.started, b.up, b.downErr, b.canaryOverdue()
	var clusterErr error
	if b.cluster != nil && started && !closed {
		clusterErr = b.checkCluster()
		up, downErr, overdue = true, nil, false
	}
	b.mu.Unlock()
	switch {
	case clusterErr != nil:
		return clusterErr
	case closed:
		return ssehub.ErrClosed
	case !started:
		// Nothing subscribed yet: publishing only needs the connection.
	case !up && downErr != nil:
		return unavailable("subscribe", downErr)
	case !up:
		return fmt.Errorf("%w: not subscribed yet", ssehub.ErrUnavailable)
	case overdue:
		return fmt.Errorf("%w: subscription stopped delivering", ssehub.ErrUnavailable)
	}
	if b.cluster != nil {
		return b.pingCluster(ctx)
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		return unavailable("ping", err)
	}
	return nil
}

// Close implements ssehub.Broker. It ends the subscription and waits for
// the broker's goroutines, or for ctx. It does not close the client.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return ssehub.ErrClosed
	}
	b.closed = true
	pss := []*redis.PubSub{b.ps, b.fps}
	for _, sh := range b.shards {
		pss = append(pss, sh.ps)
	}
	b.mu.Unlock()
	close(b.done)
	b.cancelCtx()
	for _, ps := range pss {
		if ps != nil {
			ps.Close()
		}
	}
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
