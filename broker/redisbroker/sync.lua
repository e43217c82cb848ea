-- sync.lua: publishes, on a channel's twin, the count of notices of foreign
-- messages taken into the channel's history: "S<n>" (see foreign.go).
--
-- KEYS: the channel's notices counter. ARGV: the twin channel, and "s" to
-- publish with SPUBLISH (Redis Cluster).
local pub = ARGV[2] == 's' and 'SPUBLISH' or 'PUBLISH'
return redis.call(pub, ARGV[1], 'S' .. (redis.call('GET', KEYS[1]) or '0'))
