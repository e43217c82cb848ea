-- lost.lua: tells whether a channel's history went back behind the
-- position a hub delivered up to, as when a replica that lacked the last
-- events was promoted after its master died. The position is lost when it
-- is past the channel's sequence counter, or, for the seq of an event,
-- when that event is neither in the stream nor trimmed. The events after
-- the last one still there before the position are then gone: the script
-- records the range in between, so that a resume from inside it resets
-- (resolve.lua), and moves the counter to the position, so that later
-- events come after every id the hub gave out.
--
-- KEYS: state, stream, evicted, active (of the channel, as for
-- publish.lua).
-- ARGV: channel, the position (a seq), "1" when it is the seq of an event
-- the hub delivered from the stream's channel.
-- Returns {0, 0} when nothing was lost, or {1, s} where s is the last
-- position still whole: every event after s in the stream came after the
-- loss.
local state, stream, evicted, active = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ch, pos, isevent = ARGV[1], tonumber(ARGV[2]), ARGV[3] == '1'
local function num(x) return string.format('%d', x) end
local function seqof(entryid) return tonumber(string.match(entryid, '^%d+')) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local seq = tonumber(redis.call('HGET', state, 'seq') or '0')
local wm = tonumber(redis.call('ZSCORE', evicted, ch) or '0')
if not redis.call('ZSCORE', active, ch) then
  wm = math.max(wm, tonumber(redis.call('HGET', state, 'forgotten') or '0'))
end
if seq >= pos then
  if not isevent or wm >= pos or redis.call('XRANGE', stream, num(pos) .. '-0', num(pos) .. '-0')[1] then
    return {0, 0}
  end
end
if seq == 0 then
  -- Nothing of the channel is left: start over after the position.
  seq = math.max(pos, now)
  redis.call('HSET', state, 'seq', num(seq), 'start', num(seq + 1))
  return {1, seq}
end
local s = wm
local prev = redis.call('XREVRANGE', stream, '(' .. num(pos) .. '-0', '-', 'COUNT', 1)
if prev[1] then s = math.max(s, seqof(prev[1][1])) end
s = math.max(s, tonumber(redis.call('HGET', state, 'start') or '1') - 1)
if s < pos then
  -- Merge the range (s, pos) with those recorded before; keep the last 16.
  local ranges = {{s, pos}}
  for lo, hi in string.gmatch(redis.call('HGET', state, 'lost') or '', '(%d+):(%d+)') do
    lo, hi = tonumber(lo), tonumber(hi)
    local r = ranges[1]
    if lo <= r[2] and hi >= r[1] then
      r[1], r[2] = math.min(r[1], lo), math.max(r[2], hi)
    elseif #ranges < 16 then
      ranges[#ranges + 1] = {lo, hi}
    end
  end
  local out = {}
  for i, r in ipairs(ranges) do out[i] = num(r[1]) .. ':' .. num(r[2]) end
  redis.call('HSET', state, 'lost', table.concat(out, ','))
end
if seq < pos then redis.call('HSET', state, 'seq', num(pos)) end
return {1, s}
