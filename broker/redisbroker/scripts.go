package redisbroker

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// The scripts live in .lua files beside this one, so that publishers in
// other languages can load the same publish script.
var (
	//go:embed publish.lua
	publishLua string
	//go:embed replay.lua
	replayLua string
	//go:embed canary.lua
	canaryLua string
)

// The keys, under Options.Prefix (P):
//
//	P state          hash: seq (last sequence number issued), start (the
//	                 first), forgotten (highest seq of a channel dropped for
//	                 being idle longer than the history age)
//	P active         sorted set: channel -> seq of its last event
//	P evicted        sorted set: channel -> highest seq trimmed from its stream
//	P stream:<name>  stream of the channel's events; entry id "<seq>-0",
//	                 field e = the envelope, field i = the publisher's id
//	P ids:<name>     hash: publisher's id -> seq, for ids still in the stream
//
// Sequence numbers follow the clock in microseconds (seq = max(last+1,
// TIME)), so they stay unique and growing across restarts of Redis without
// persistence, and an id from before such a restart is recognised as
// unknown because it is below start.

// publishScript assigns the next seq, records the envelope in the channel's
// stream, trims the stream by count and age (noting the highest trimmed seq
// as the channel's watermark), drops a few channels idle for longer than
// the age, and publishes the envelope on the channel, all in one step.
//
// KEYS: state, active, evicted, stream, ids.
// ARGV: channel, envelope up to the id value, the publisher's id as a JSON
// string or "", the publisher's id or "", history size (<= 0: none),
// history age in microseconds (<= 0: none), key prefix.
// Returns {seq, number of receivers}.
var publishScript = redis.NewScript(publishLua)

// replayScript returns the head and, per channel, whether the events after
// a position are all still there and, if so, those events up to the head.
// The position is the one the last event id stands for (a publisher's id
// found in a channel's id index, or a seq this Redis issued), or, per
// channel, one given as a number.
//
// KEYS: state, active, evicted, then stream and ids of each channel.
// ARGV: last event id, "1" when history is kept, history age in
// microseconds (<= 0: none), the channel names, then per channel a position
// or "" for the last event id's.
// Returns {head, ok1, entries1, ok2, entries2, ...}.
var replayScript = redis.NewScript(replayLua)

// canaryScript publishes a canary on the broker's private channel: a
// token and the last seq issued. When it comes back through the
// subscription, every event up to that seq on the subscribed channels has
// come through before it.
//
// KEYS: state. ARGV: canary channel, token.
var canaryScript = redis.NewScript(canaryLua)
