-- Give back the reservation of a request that never went upstream: budgets (unless the sweep
-- did already) and estimated tokens.
--
-- KEYS[1] the org's reservation index, KEYS[2] the request's reservation
-- ARGV  now, request id
-- Returns 1 if a reservation was released, 0 if there was none.

local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[2], '~s')
if not state then return 0 end
give_back(KEYS[2], state == 'open', true, now)
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], ARGV[2])
return 1
