-- Change the pushed policies if nobody else did since the caller read them, then announce it.
--
-- KEYS[1] hash: policy name -> policy text;  KEYS[2] the change counter (version)
-- ARGV  expected version, channel, n (policies to store), then n pairs name, text, then the
--       names to remove
-- Returns {1, new version}, or {0, current version} when the version is not the expected one.

local version = tonumber(redis.call('GET', KEYS[2]) or '0')
if version ~= tonumber(ARGV[1]) then return {0, version} end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  i = i + 1
end
version = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[2], version)
return {1, version}
