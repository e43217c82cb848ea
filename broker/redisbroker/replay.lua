-- replay.lua: returns the head and, per channel, whether the events after
-- a position are all still there and, if so, those events up to the head.
--
-- KEYS: state, active, evicted, then stream and ids of each channel.
-- ARGV: last event id, "1" when history is kept, history age in
-- microseconds (<= 0: none), the channel names, then per channel a position
-- or "" for the last event id's.
-- Returns {head, ok1, entries1, ok2, entries2, ...}.
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
