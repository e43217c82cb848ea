-- publish.lua: publishes one event. In one atomic step it
--   * returns the event published earlier with the same idempotency key,
--     if any, and publishes nothing;
--   * assigns the next seq and records the envelope in the channel's
--     stream, indexing a publisher's own id;
--   * trims the channel's stream, oldest first, to the history size, age
--     and per-channel bytes (never the event just added; see cost for how
--     an event's bytes are counted), noting the
--     highest trimmed seq as the channel's watermark;
--   * trims the oldest events of any channel while all streams together
--     hold more than the history bytes;
--   * now and then, drops a few channels idle for longer than the age;
--   * publishes the envelope on the channel, and remembers the key.
-- The Go broker (broker/redisbroker) runs it, and so may publishers in
-- other languages that write the same keys: pass every KEYS and ARGV entry.
--
-- KEYS (P = the key prefix, "ssehub:" by default):
--   1 P.."state"   2 P.."active"   3 P.."evicted"   4 P.."stream:"..channel
--   5 P.."ids:"..channel   6 P.."first"   7 P.."bytes"   8 P.."keys"
--   9 P.."keyq"
-- ARGV:
--   1 channel
--   2 the envelope up to and including '"id":' (see envelope.go)
--   3 the publisher's id as a JSON string, or "" to use the seq
--   4 the publisher's id, or ""
--   5 history size, events per channel (<= 0: no history)
--   6 history age in microseconds (<= 0: no limit)
--   7 the key prefix P
--   8 history bytes over all channels (<= 0: no limit)
--   9 history bytes per channel (<= 0: no limit)
--  10 idempotency key, or "" for none
--  11 fingerprint of the message: any string that differs between
--     different messages (ssehub: hex SHA-256 of ARGV 1, 2 and 3)
--  12 a token naming this attempt (see fence.lua)
--  13 how long to remember the key, in microseconds
--  14 how many keys to remember at most, over all channels
--  15 (optional) the shape of what goes on the channel: "" the envelope;
--     "f" flask-sse's message: the envelope goes to the channel's twin
--     (P.."#"..channel) for the hubs, then ARGV 16 .. the id's JSON ..
--     ARGV 17 to the channel, for flask-sse's readers; "i" a message of
--     another publisher, already on the channel, taken into the history
--     (see foreign.go): ARGV 16 is the number of notices the caller has
--     seen, KEYS 10 (P.."notices:"..channel) counts them; only a caller
--     that has seen them all takes the message in, and the envelope goes
--     to the twin as the notice "I<n> <envelope>"
--  16, 17 see 15
--  18 (optional) "s" to publish with SPUBLISH (Redis Cluster: sharded
--     pub/sub, the keys and channels all in the channel's slot), else
--     PUBLISH
-- Returns {seq, number of receivers, status}: status 0 published; 1 the
-- key was published before as seq (receivers 0); 2 this attempt was given
-- up on by fence.lua (nothing published, seq 0); 3 ("i" only) the caller
-- has not seen every notice, which is the second value (nothing
-- published, seq 0). For "i", the second value is the notice's number. A
-- key used before with another fingerprint is an error reply starting
-- with SSEHUB_KEY_REUSED.
local state, active, evicted, stream, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local first, sizes, keys, keyq = KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local channel, head, idjson, rawid = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local size, age, prefix = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
local budget, chbudget = tonumber(ARGV[8]), tonumber(ARGV[9])
local key, fp, attempt = ARGV[10], ARGV[11], ARGV[12]
local window, maxkeys = tonumber(ARGV[13]), tonumber(ARGV[14])
local mode = ARGV[15] or ''
local pub = ARGV[18] == 's' and 'SPUBLISH' or 'PUBLISH'
local function num(x) return string.format('%d', x) end
local function seqof(entryid) return tonumber(string.match(entryid, '^%d+')) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])

if mode == 'i' then
  local seen = tonumber(redis.call('GET', KEYS[10]) or '0')
  if seen ~= tonumber(ARGV[16]) then return {0, seen or -1, 3} end
end

-- A key record is "p <seq> <fingerprint>" once published, or
-- "a <attempt>,<attempt>... <fingerprint>" for attempts given up on.
if key ~= '' then
  local rec = redis.call('HGET', keys, key)
  if rec then
    local kind, val, recfp = string.match(rec, '^(%a) (%S+) (.*)$')
    if recfp ~= fp then
      return redis.error_reply('SSEHUB_KEY_REUSED the idempotency key was used for another message')
    end
    if kind == 'p' then
      -- Written again, unchanged: a WAIT that follows on this connection
      -- then covers the publish, which another connection may have made
      -- (Redis counts a connection's writes for WAIT).
      redis.call('HSET', keys, key, rec)
      return {tonumber(val), 0, 1}
    end
    if string.find(',' .. val .. ',', ',' .. attempt .. ',', 1, true) then return {0, 0, 2} end
    -- Other attempts were given up on; this one is a new try.
  end
end

-- Every call to Redis costs about as much as what it does, so state's
-- fields are read in one call and written in one at the end, and numbers
-- go as text made here: Redis would turn a Lua number into text with
-- 17 significant digits, a slow conversion for sequence numbers.
local st = redis.call('HMGET', state, 'seq', 'bytes')
local last = tonumber(st[1] or '0')
local seq = math.max(last + 1, now)
if last == 0 then
  local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
  if top[1] then seq = math.max(seq, seqof(top[1][1]) + 1) end
  redis.call('HSET', state, 'start', num(seq))
end
-- What all streams hold; written with seq below.
local total = tonumber(st[2] or '0')
if idjson == '' then idjson = '"' .. string.format('%016d', seq) .. '"' end
local env = head .. idjson .. ',"ssehub_seq":' .. num(seq) .. '}'

-- The bytes an event is counted for: what the allocator takes for its
-- text (jemalloc has four size classes per power of two), and the
-- stream's and the id index's bookkeeping.
local function cost(env, rawid)
  local n = #env + #rawid
  if n > 4096 then
    local _, e = math.frexp(n)
    local step = 2 ^ (e - 3)
    n = math.ceil(n / step) * step
  end
  return n + 80 + #rawid
end
local function esize(e)
  local f = e[2]
  return cost(f[2], f[3] == 'i' and f[4] or '')
end

-- The id index maps a publisher's id to "<seq>" of its latest retained
-- event, or "<seq> <n>" when n > 1 retained events have that id.
local function unindex(idskey, e)
  local f = e[2]
  if f[3] ~= 'i' then return end
  local v = redis.call('HGET', idskey, f[4])
  if not v then return end
  local s, n = string.match(v, '^(%d+) ?(%d*)$')
  n = tonumber(n) or 1
  if n > 2 then
    redis.call('HSET', idskey, f[4], s .. ' ' .. num(n - 1))
  elseif n == 2 then
    redis.call('HSET', idskey, f[4], s)
  elseif s == num(seqof(e[1])) then
    redis.call('HDEL', idskey, f[4])
  end
end

-- trim drops the oldest entries of channel c while drop(seq, entry) says
-- so, and returns the bytes dropped and whether it dropped any.
local function trim(c, drop)
  local cs, cids = prefix .. 'stream:' .. c, prefix .. 'ids:' .. c
  local dropped, wm, kept, from, count = 0, nil, nil, '-', 2
  -- Mostly one entry goes, or none: read two first, the one to drop and
  -- the one that is then the oldest, then more at a time.
  while true do
    local batch = redis.call('XRANGE', cs, from, '+', 'COUNT', count)
    for _, e in ipairs(batch) do
      local s = seqof(e[1])
      if s == seq or not drop(s, e) then kept = s break end
      local n = esize(e)
      dropped = dropped + n
      unindex(cids, e)
      wm = s
    end
    if kept or #batch < count then break end
    from = '(' .. batch[#batch][1]
    count = math.min(2 * count, 64)
  end
  if wm then
    redis.call('XTRIM', cs, 'MINID', num(wm + 1) .. '-0')
    redis.call('ZADD', evicted, 'GT', num(wm), c)
    local left = tonumber(redis.call('HINCRBY', sizes, c, num(-dropped)))
    if left < 0 then redis.call('HSET', sizes, c, '0') end
    -- The entry that stopped the trim is now the oldest; none stopped
    -- it: the stream is empty.
    if kept then redis.call('ZADD', first, num(kept), c) else redis.call('ZREM', first, c) end
  end
  return dropped, wm ~= nil
end

if size > 0 then
  local n = cost(env, rawid)
  if rawid ~= '' then
    redis.call('XADD', stream, num(seq) .. '-0', 'e', env, 'i', rawid)
    local v = redis.call('HGET', ids, rawid)
    if v then
      local _, k = string.match(v, '^(%d+) ?(%d*)$')
      redis.call('HSET', ids, rawid, num(seq) .. ' ' .. num((tonumber(k) or 1) + 1))
    else
      redis.call('HSET', ids, rawid, num(seq))
    end
  else
    redis.call('XADD', stream, num(seq) .. '-0', 'e', env)
  end
  redis.call('ZADD', active, num(seq), channel)
  total = total + n
  local len = redis.call('XLEN', stream)
  local chbytes = tonumber(redis.call('HINCRBY', sizes, channel, num(n)))
  local over = len > size or (chbudget > 0 and chbytes > chbudget)
  local oldest = seq
  if not over then
    -- The seq of the channel's oldest event, for the age. When the
    -- channel is over its size or bytes, the trim checks the age of each
    -- event it reads, and records the oldest left.
    oldest = tonumber(redis.call('ZSCORE', first, channel))
    if not oldest then
      oldest = seq
      redis.call('ZADD', first, num(seq), channel)
    end
  end
  -- Reading entries is the costly part: only when something is over.
  if over or (age > 0 and oldest < now - age) then
    local dropped, any = trim(channel, function(s, e)
      if len > size or (age > 0 and s < now - age) or (chbudget > 0 and chbytes > chbudget) then
        len, chbytes = len - 1, chbytes - esize(e)
        return true
      end
      return false
    end)
    -- Nothing dropped: a new channel's oldest event is the one just added.
    if not any then redis.call('ZADD', first, 'NX', num(seq), channel) end
    total = total - dropped
  end
  if total < 0 then
    -- Streams written before bytes were counted.
    total = 0
  end
  -- Over the budget of all channels: the oldest events go first, whatever
  -- their channel, up to the next channel's oldest each round.
  while budget > 0 and total > budget do
    local two = redis.call('ZRANGE', first, 0, 1, 'WITHSCORES')
    if #two == 0 then break end
    local limit = math.huge
    if two[4] then limit = tonumber(two[4]) end
    local took = false
    local _, any = trim(two[1], function(s, e)
      if total <= budget or (took and s > limit) then return false end
      total, took = total - esize(e), true
      return true
    end)
    if not any then break end
  end
  -- Every 8th publish, drop up to 8 channels idle for longer than the age.
  if age > 0 and seq % 8 == 0 then
    local idle = redis.call('ZRANGEBYSCORE', active, '-inf', '(' .. num(now - age), 'WITHSCORES', 'LIMIT', 0, 8)
    if #idle > 0 then
      local forgotten = tonumber(redis.call('HGET', state, 'forgotten') or '0')
      for i = 1, #idle, 2 do
        local c = idle[i]
        total = total - tonumber(redis.call('HGET', sizes, c) or '0')
        redis.call('DEL', prefix .. 'stream:' .. c, prefix .. 'ids:' .. c)
        redis.call('ZREM', active, c)
        redis.call('ZREM', evicted, c)
        redis.call('ZREM', first, c)
        redis.call('HDEL', sizes, c)
        forgotten = math.max(forgotten, tonumber(idle[i + 1]))
      end
      redis.call('HSET', state, 'forgotten', num(forgotten))
    end
  end
  redis.call('HSET', state, 'seq', num(seq), 'bytes', num(total))
else
  redis.call('HSET', state, 'seq', num(seq))
end

if key ~= '' then
  redis.call('HSET', keys, key, 'p ' .. num(seq) .. ' ' .. fp)
  redis.call('ZADD', keyq, num(now + window), key)
  -- Every 16th publish, forget up to 64 expired keys, and the oldest
  -- over the limit.
  if seq % 16 == 0 then
    local old = redis.call('ZRANGEBYSCORE', keyq, '-inf', num(now), 'LIMIT', 0, 64)
    local over = redis.call('ZCARD', keyq) - maxkeys
    if over > 0 then
      for _, k in ipairs(redis.call('ZRANGE', keyq, 0, math.min(over, 64) - 1)) do old[#old + 1] = k end
    end
    if #old > 0 then
      redis.call('HDEL', keys, unpack(old))
      redis.call('ZREM', keyq, unpack(old))
    end
  end
end
if mode == 'f' then
  redis.call(pub, prefix .. '#' .. channel, env)
  return {seq, redis.call(pub, channel, ARGV[16] .. idjson .. ARGV[17]), 0}
elseif mode == 'i' then
  local n = redis.call('INCR', KEYS[10])
  redis.call('EXPIRE', KEYS[10], 86400)
  redis.call(pub, prefix .. '#' .. channel, 'I' .. n .. ' ' .. env)
  return {seq, n, 0}
end
return {seq, redis.call(pub, channel, env), 0}
