-- Store an approval until it expires, and index it for listing.
--
-- KEYS[1] the approval (hash), KEYS[2] the index (sorted set: id -> expires_at)
-- ARGV  now, id, expires_at, then field, value pairs

local now, expires = tonumber(ARGV[1]), tonumber(ARGV[3])
local ttl_ms = math.max(math.ceil((expires - now) * 1000), 1)
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ttl_ms)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZADD', KEYS[2], expires, ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl_ms then redis.call('PEXPIRE', KEYS[2], ttl_ms) end
return 1
