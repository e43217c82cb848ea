-- canary.lua: publishes a canary on the broker's private channel: a token
-- and the last seq issued.
--
-- KEYS: state. ARGV: canary channel, token.
return redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. (redis.call('HGET', KEYS[1], 'seq') or '0'))
