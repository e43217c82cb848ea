-- rewind.lua: finds events a broker delivered or published that this Redis
-- does not have, as after a failover to a replica that had not copied
-- them yet (replication is asynchronous). Per channel the caller names
-- the highest seq it knows was issued on it; when that event is missing
-- from the channel's stream without having been trimmed, the channel lost
-- events. The script then records the loss, so that a resume from a
-- position before the lost event resets instead of skipping it, and tells
-- the hubs on the channel's twin with the notice "L<seq>". It also raises
-- the sequence counter to the highest seq the caller knows, so that no
-- later event gets a seq that was issued before.
--
-- KEYS: state, active, evicted, lost, then the stream of each channel.
-- ARGV: the highest seq the caller knows, "1" when history is kept, the
-- key prefix, history age in microseconds (<= 0: none), then per channel
-- its name and the highest seq the caller knows on it (0: none).
-- Returns {raised, lost1, lost2, ...}: raised is 1 when the counter was
-- below the caller's seq; lostN is 1 when channel N lost its event.
local state, active, evicted, lostkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local hi, history, prefix, age = tonumber(ARGV[1]), ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
local n = (#ARGV - 4) / 2
local function num(x) return string.format('%d', x) end
local out = {0}
local seq = tonumber(redis.call('HGET', state, 'seq') or '0')
if seq == 0 then
  -- This Redis has nothing at all: resolve.lua starts it afresh, and
  -- every position from before reads as unknown.
  for i = 1, n do out[#out + 1] = 0 end
  return out
end
local start = tonumber(redis.call('HGET', state, 'start') or '0')
local forgotten = tonumber(redis.call('HGET', state, 'forgotten') or '0')
if age > 0 then
  -- Losses older than the history are of no use to a resume.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('ZREMRANGEBYSCORE', lostkey, '-inf', '(' .. num(now - age))
end
for i = 1, n do
  local ch, k = ARGV[3 + 2 * i], tonumber(ARGV[4 + 2 * i])
  local lost = 0
  if history and k > 0 and k >= start and
      not redis.call('XRANGE', KEYS[4 + i], num(k) .. '-0', num(k) .. '-0')[1] then
    local known = tonumber(redis.call('ZSCORE', lostkey, ch) or '0')
    local wm = tonumber(redis.call('ZSCORE', evicted, ch) or '0')
    if not redis.call('ZSCORE', active, ch) then wm = math.max(wm, forgotten) end
    if known >= k then
      lost = 1 -- recorded already, by another broker
    elseif k > wm then
      -- Not trimmed: lost. A resume from before k now reads as unknown.
      lost = 1
      redis.call('ZADD', evicted, 'GT', k, ch)
      redis.call('ZADD', lostkey, 'GT', k, ch)
      redis.call('PUBLISH', prefix .. '#' .. ch, 'L' .. num(k))
    end
  end
  out[#out + 1] = lost
end
if hi > seq then
  redis.call('HSET', state, 'seq', num(hi))
  out[1] = 1
end
return out
