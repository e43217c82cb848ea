-- sync.lua: publishes, on a channel's twin, the count of notices of foreign
-- messages taken into the channel's history: "S<n>" (see foreign.go).
--
-- KEYS: the channel's notices counter. ARGV: the twin channel.
return redis.call('PUBLISH', ARGV[1], 'S' .. (redis.call('GET', KEYS[1]) or '0'))
