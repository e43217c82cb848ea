package redisbroker

import "github.com/redis/go-redis/v9"

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
var publishScript = redis.NewScript(`
local state, active, evicted, stream, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local channel, head, idjson, rawid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local size, age, prefix = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local function num(x) return string.format('%d', x) end
local function seqof(entryid) return tonumber(string.match(entryid, '^%d+')) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local last = tonumber(redis.call('HGET', state, 'seq') or '0')
local seq = math.max(last + 1, now)
if last == 0 then
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if top[1] then seq = math.max(seq, seqof(top[1][1]) + 1) end
  redis.call('HSET', state, 'start', num(seq))
end
redis.call('HSET', state, 'seq', num(seq))
if idjson == '' then idjson = '"' .. string.format('%016d', seq) .. '"' end
local env = head .. idjson .. ',"ssehub_seq":' .. num(seq) .. '}'
if size > 0 then
  if rawid ~= '' then
    redis.call('XADD', stream, num(seq) .. '-0', 'e', env, 'i', rawid)
    redis.call('HSET', ids, rawid, num(seq))
  else
    redis.call('XADD', stream, num(seq) .. '-0', 'e', env)
  end
  redis.call('ZADD', active, seq, channel)
  local drop = {}
  local over = redis.call('XLEN', stream) - size
  if over > 0 then drop = redis.call('XRANGE', stream, '-', '+', 'COUNT', over) end
  if age > 0 then
    local from = '-'
    if #drop > 0 then from = '(' .. drop[#drop][1] end
    local old = redis.call('XRANGE', stream, from, '(' .. num(now - age) .. '-0')
    for _, e in ipairs(old) do drop[#drop + 1] = e end
  end
  if #drop > 0 then
    for _, e in ipairs(drop) do
      local f = e[2]
      if f[3] == 'i' and redis.call('HGET', ids, f[4]) == num(seqof(e[1])) then
        redis.call('HDEL', ids, f[4])
      end
    end
    local wm = seqof(drop[#drop][1])
    redis.call('XTRIM', stream, 'MINID', num(wm + 1) .. '-0')
    redis.call('ZADD', evicted, 'GT', wm, channel)
  end
  if age > 0 then
    local idle = redis.call('ZRANGEBYSCORE', active, '-inf', '(' .. num(now - age), 'WITHSCORES', 'LIMIT', 0, 8)
    if #idle > 0 then
      local forgotten = tonumber(redis.call('HGET', state, 'forgotten') or '0')
      for i = 1, #idle, 2 do
        local c = idle[i]
        redis.call('DEL', prefix .. 'stream:' .. c, prefix .. 'ids:' .. c)
        redis.call('ZREM', active, c)
        redis.call('ZREM', evicted, c)
        forgotten = math.max(forgotten, tonumber(idle[i + 1]))
      end
      redis.call('HSET', state, 'forgotten', num(forgotten))
    end
  end
end
return {seq, redis.call('PUBLISH', channel, env)}
`)

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
var replayScript = redis.NewScript(`
local state, active, evicted = KEYS[1], KEYS[2], KEYS[3]
local lastid, history, age = ARGV[1], ARGV[2] == '1', tonumber(ARGV[3])
local n = (#KEYS - 3) / 2
local function num(x) return string.format('%d', x) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local seq = tonumber(redis.call('HGET', state, 'seq') or '0')
local start
if seq == 0 then
  seq = now
  start = now + 1
  redis.call('HSET', state, 'seq', num(seq), 'start', num(start))
else
  start = tonumber(redis.call('HGET', state, 'start') or '0')
end
local forgotten = tonumber(redis.call('HGET', state, 'forgotten') or '0')
local function valid(p) return p ~= nil and p >= start - 1 and p <= seq end
local pos = nil
if lastid ~= '' then
  for i = 1, n do
    local s = redis.call('HGET', KEYS[3 + 2 * i], lastid)
    if s then
      s = tonumber(s)
      if pos == nil or s > pos then pos = s end
    end
  end
  if pos == nil and #lastid >= 16 and string.match(lastid, '^%d+$') then
    local v = tonumber(lastid)
    if valid(v) then pos = v end
  end
end
local out = {num(seq)}
for i = 1, n do
  local stream, ch, given = KEYS[2 + 2 * i], ARGV[3 + i], ARGV[3 + n + i]
  local p = pos
  if given ~= '' then
    p = tonumber(given)
    if not valid(p) then p = nil end
  end
  local ok = p ~= nil
  local entries = {}
  if ok and not history then
    ok = p >= seq
  elseif ok then
    local wm = tonumber(redis.call('ZSCORE', evicted, ch) or '0')
    if not redis.call('ZSCORE', active, ch) then wm = math.max(wm, forgotten) end
    if wm > p then ok = false end
    if ok and age > 0 and now - age > p + 1 then
      if redis.call('XREVRANGE', stream, '(' .. num(now - age) .. '-0', '(' .. num(p) .. '-0', 'COUNT', 1)[1] then
        ok = false
      end
    end
    if ok then entries = redis.call('XRANGE', stream, '(' .. num(p) .. '-0', num(seq) .. '-0') end
  end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = entries
end
return out
`)

// canaryScript publishes a canary on the broker's private channel: a
// token and the last seq issued. When it comes back through the
// subscription, every event up to that seq on the subscribed channels has
// come through before it.
//
// KEYS: state. ARGV: canary channel, token.
var canaryScript = redis.NewScript(`
return redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. (redis.call('HGET', KEYS[1], 'seq') or '0'))
`)
