package redisbroker

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The scripts live in .lua files beside this one, so that publishers in
// other languages can load the same publish script. Each file's header
// says what it takes and returns.
var (
	//go:embed publish.lua
	publishLua string
	//go:embed resolve.lua
	resolveLua string
	//go:embed page.lua
	pageLua string
	//go:embed fence.lua
	fenceLua string
	//go:embed canary.lua
	canaryLua string
	//go:embed sync.lua
	syncLua string
	//go:embed rewind.lua
	rewindLua string
	//go:embed lost.lua
	lostLua string
)

// The keys, under Options.Prefix (P):
//
//	P state          hash: seq (last sequence number issued or reserved),
//	                 start (the first), forgotten (highest seq of a channel
//	                 dropped for being idle longer than the history age),
//	                 bytes (what all streams hold, as publish.lua counts it),
//	                 lost (ranges of positions a failover lost, lost.lua)
//	P active         sorted set: channel -> seq of its last event
//	P evicted        sorted set: channel -> highest seq trimmed from its stream
//	P first          sorted set: channel -> seq of the oldest event in its stream
//	P bytes          hash: channel -> bytes its stream holds
//	P stream:<name>  stream of the channel's events; entry id "<seq>-0",
//	                 field e = the envelope, field i = the publisher's id
//	P ids:<name>     hash: publisher's id -> "<seq>" of the latest retained
//	                 event with it, or "<seq> <n>" when n > 1 retained
//	                 events have it
//	P keys           hash: idempotency key -> "p <seq> <fingerprint>" once
//	                 published, "a <attempts> <fingerprint>" for attempts
//	                 given up on
//	P keyq           sorted set: idempotency key -> when to forget it (µs)
//	P lost           sorted set: channel -> highest seq of its that this
//	                 Redis lost, as found after a failover (rewind.lua)
//	P notices:<name> count of foreign messages taken into the channel's
//	                 history (foreign.go); expires a day after the last
//
// On Redis Cluster, P is followed by the hash tag of the channel,
// "P{<name>}", in every key, so that all of them, and the channel, live in
// the channel's hash slot: the counter, the indexes and the idempotency
// keys are then the channel's own, and the history bytes a bound per
// channel.
//
// Besides the channel itself, hubs subscribe its twin, the pub/sub channel
// "P#<name>", which carries notices and envelopes that the Python readers
// on the channel must not see (foreign.go), and the notice of lost events
// (rewind.go).
//
// Sequence numbers follow the clock in microseconds (seq = max(last+1,
// TIME)), so they stay unique and growing across restarts of Redis without
// persistence, and an id from before such a restart is recognised as
// unknown because it is below start.

// publishScript publishes one event (publish.lua).
var publishScript = redis.NewScript(publishLua)

// resolveScript finds the bounds of a replay, and the head (resolve.lua).
var resolveScript = redis.NewScript(resolveLua)

// pageScript reads one bounded page of a replay (page.lua).
var pageScript = redis.NewScript(pageLua)

// fenceScript settles a publish whose answer was lost (fence.lua).
var fenceScript = redis.NewScript(fenceLua)

// canaryScript publishes a canary on the broker's private channel: a
// token and the last seq issued. When it comes back through the
// subscription, every event up to that seq on the subscribed channels has
// come through before it (canary.lua).
var canaryScript = redis.NewScript(canaryLua)

// syncScript publishes the count of a channel's notices on its twin.
//
// KEYS: notices counter. ARGV: twin channel.
var syncScript = redis.NewScript(syncLua)

// rewindScript finds events a broker knows of that Redis lost, records
// the loss and raises the counter past them (rewind.lua).
var rewindScript = redis.NewScript(rewindLua)

// lostScript finds and records what a failover lost of a channel's
// history (lost.lua).
var lostScript = redis.NewScript(lostLua)
