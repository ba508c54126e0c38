-- Approve or deny a pending approval; a decided one is left as it is.
--
-- KEYS[1] the approval
-- ARGV  now, status (approved | denied), approver, reason
-- Returns the approval's fields after the decision, or an empty list if unknown or expired.

local f = redis.call('HMGET', KEYS[1], 'status', 'expires_at')
if not f[1] or tonumber(f[2]) <= tonumber(ARGV[1]) then return {} end
if f[1] == 'pending' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2], 'approver', ARGV[3], 'reason', ARGV[4])
end
return redis.call('HGETALL', KEYS[1])
