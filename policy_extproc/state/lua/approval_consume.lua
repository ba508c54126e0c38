-- Use an approved approval once, for the request and user it was granted to.
--
-- KEYS[1] the approval
-- ARGV  now, fingerprint, user
-- Returns 1 if it was consumed now, else 0 (unknown, expired, not approved, used, mismatch).

local f = redis.call('HMGET', KEYS[1], 'status', 'expires_at', 'fingerprint', 'user')
if f[1] == 'approved' and tonumber(f[2]) > tonumber(ARGV[1])
    and f[3] == ARGV[2] and f[4] == ARGV[3] then
  redis.call('HSET', KEYS[1], 'status', 'consumed')
  return 1
end
return 0
