-- publish.lua: assigns the next seq, records the envelope in the channel's
-- stream, trims the stream by count and age (noting the highest trimmed seq
-- as the channel's watermark), drops a few channels idle for longer than
-- the age, and publishes the envelope on the channel, all in one step.
-- Used by the Go broker (broker/redisbroker) and by other publishers that
-- write the same keys.
--
-- KEYS: state, active, evicted, stream, ids (see scripts.go for the keys).
-- ARGV: channel, envelope up to the id value, the publisher's id as a JSON
-- string or "", the publisher's id or "", history size (<= 0: none),
-- history age in microseconds (<= 0: none), key prefix.
-- Returns {seq, number of receivers}.
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
