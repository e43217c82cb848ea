-- page.lua: reads one page of a channel's stream for a replay: the events
-- after a seq up to another, at most a count and about a number of bytes
-- (at least one event), so that no reply is large whatever the history
-- holds. It reads the stream a few entries at a time, so that Redis does
-- not hold more than the page either.
--
-- KEYS: state, active, evicted, stream.
-- ARGV: channel, after (a seq, exclusive), up to (a seq, inclusive), most
-- events, most bytes.
-- Returns {ok, more, entries}: ok is 0 when events after `after` have been
-- trimmed (or the channel forgotten) since the replay began; more is 1
-- when the page stopped at its bounds.
local state, active, evicted, stream = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ch, after, upto = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local maxcount, maxbytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local function num(x) return string.format('%d', x) end
local wm = tonumber(redis.call('ZSCORE', evicted, ch) or '0')
if not redis.call('ZSCORE', active, ch) then
  wm = math.max(wm, tonumber(redis.call('HGET', state, 'forgotten') or '0'))
end
if wm > after then return {0, 0, {}} end
local out, bytes, more = {}, 0, 0
local from = '(' .. num(after) .. '-0'
while true do
  local batch = redis.call('XRANGE', stream, from, upto .. '-0', 'COUNT', 8)
  for _, e in ipairs(batch) do
    if #out > 0 and (bytes >= maxbytes or #out >= maxcount) then
      more = 1
      break
    end
    out[#out + 1] = e
    bytes = bytes + #e[2][2]
  end
  if more == 1 or #batch < 8 then break end
  from = '(' .. batch[#batch][1]
end
return {1, more, out}
