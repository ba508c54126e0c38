-- Read a provider's circuit breaker (see breaker_record.lua).
--
-- KEYS[1] breaker hash, KEYS[2] failure times
-- Returns {open 0|1, failures counted, opened_at (string)}

local is_open = redis.call('HGET', KEYS[1], 'open') == '1'
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at')) or 0
return {is_open and 1 or 0, redis.call('ZCARD', KEYS[2]), string.format('%.17g', opened)}
