-- resolve.lua: finds where a replay starts and ends, without reading any
-- event (page.lua reads them). Per channel it tells whether the events
-- after the start are all still there; it also returns the head of the
-- channels: the clock, or the highest seq the channels have seen when
-- later, which it reserves so that every later publish gets a larger seq.
-- The head does not move with publishes on other channels.
--
-- The start is the position the last event id stands for: the seq of the
-- one retained event with that publisher's id on the channels, or a seq
-- this Redis issued. An id that names more than one retained event, or one
-- event and another issued seq, is ambiguous and stands for nothing, so
-- that a resume from it resets rather than skip events. Per channel, a
-- position given as a number replaces it. A position inside a range that
-- a failover lost (lost.lua) stands for nothing either.
--
-- KEYS: state, active, evicted, then stream and ids of each channel.
-- ARGV: last event id, "1" when history is kept, history age in
-- microseconds (<= 0: none), the channel names, then per channel a position
-- or "" for the last event id's.
-- Returns {seq, head, start or "", ok1, head1, ok2, head2, ...}, where
-- head is the head of all the channels and headN that of channel N.
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
-- Positions inside a range a failover lost (lost.lua) stand for nothing.
local lost = {}
for lo, hi in string.gmatch(redis.call('HGET', state, 'lost') or '', '(%d+):(%d+)') do
  lost[#lost + 1] = {tonumber(lo), tonumber(hi)}
end
local function valid(p)
  if p == nil or p < start - 1 or p > seq then return false end
  for _, r in ipairs(lost) do
    if p > r[1] and p < r[2] then return false end
  end
  return true
end
local pos = nil
if lastid ~= '' then
  local matches = 0
  for i = 1, n do
    local v = redis.call('HGET', KEYS[3 + 2 * i], lastid)
    if v then
      local s, k = string.match(v, '^(%d+) ?(%d*)$')
      matches = matches + (tonumber(k) or 1)
      pos = tonumber(s)
    end
  end
  local issued = nil
  if #lastid >= 16 and string.match(lastid, '^%d+$') then
    local v = tonumber(lastid)
    if valid(v) then issued = v end
  end
  if matches == 0 then
    pos = issued
  elseif matches > 1 or (issued ~= nil and issued ~= pos) then
    pos = nil
  end
end
local head = math.max(now, start - 1)
local out = {'', '', pos and num(pos) or ''}
for i = 1, n do
  local stream, ch, given = KEYS[2 + 2 * i], ARGV[3 + i], ARGV[3 + n + i]
  local wm = tonumber(redis.call('ZSCORE', evicted, ch) or '0')
  local last = redis.call('ZSCORE', active, ch)
  local chead = math.max(now, start - 1)
  if last then chead = math.max(chead, tonumber(last)) else wm = math.max(wm, forgotten) end
  chead = math.max(chead, wm)
  head = math.max(head, chead)
  local p = pos
  if given ~= '' then
    p = tonumber(given)
    if not valid(p) then p = nil end
  end
  local ok = p ~= nil
  if ok and not history then
    ok = p >= seq
  elseif ok then
    if wm > p then ok = false end
    if ok and age > 0 and now - age > p + 1 then
      if redis.call('XREVRANGE', stream, '(' .. num(now - age) .. '-0', '(' .. num(p) .. '-0', 'COUNT', 1)[1] then
        ok = false
      end
    end
  end
  out[#out + 1] = ok and 1 or 0
  out[#out + 1] = num(chead)
end
if head > seq then
  seq = head
  redis.call('HSET', state, 'seq', num(seq))
end
out[1], out[2] = num(seq), num(head)
return out
