-- fence.lua: settles a publish whose answer did not come (a timeout, a
-- broken connection): it tells whether the idempotency key was published,
-- and if not, marks the attempt as given up on, so that publish.lua does
-- nothing if that attempt reaches Redis later. A publisher that gets "not
-- published" here may say so truthfully, and send the message again.
--
-- KEYS: keys, keyq (as for publish.lua).
-- ARGV: idempotency key, attempt token, fingerprint, how long to remember
-- in microseconds.
-- Returns {1, seq} when the key was published as seq, {0, 0} when not,
-- {2, 0} when the key belongs to another message.
local keys, keyq = KEYS[1], KEYS[2]
local key, attempt, fp, window = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local rec = redis.call('HGET', keys, key)
local given = attempt
if rec then
  local kind, val, recfp = string.match(rec, '^(%a) (%S+) (.*)$')
  if recfp ~= fp then return {2, 0} end
  if kind == 'p' then return {1, tonumber(val)} end
  -- Keep the last attempts given up on with this key.
  local list = {attempt}
  for a in string.gmatch(val, '[^,]+') do
    if #list < 16 and a ~= attempt then list[#list + 1] = a end
  end
  given = table.concat(list, ',')
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('HSET', keys, key, 'a ' .. given .. ' ' .. fp)
redis.call('ZADD', keyq, now + window, key)
return {0, 0}
