-- Count one upstream outcome in a provider's circuit breaker, shared by every replica.
-- closed -> open after `threshold` failures within `window`; open -> half_open once
-- `cooldown` has passed (derived, not stored); half_open -> closed on a success, or open
-- again (a new cooldown) on a failure.
--
-- KEYS[1] breaker (hash: open 0|1, opened_at, seq), KEYS[2] failure times (sorted set)
-- ARGV  now, ok 0|1, window s, threshold, cooldown s, keep s
-- Returns {open 0|1, failures in window, opened_at (string)}

local now, ok = tonumber(ARGV[1]), ARGV[2] == '1'
local window, threshold, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local is_open = redis.call('HGET', KEYS[1], 'open') == '1'
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at')) or 0

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local half_open = is_open and now >= opened + cooldown
if half_open and ok then
  is_open = false
  redis.call('DEL', KEYS[2])
elseif half_open then
  opened = now
elseif not is_open and not ok then
  -- members must be unique, two failures can share a timestamp
  redis.call('ZADD', KEYS[2], now, redis.call('HINCRBY', KEYS[1], 'seq', 1))
  if redis.call('ZCARD', KEYS[2]) >= threshold then
    is_open, opened = true, now
  end
end

redis.call('HSET', KEYS[1], 'open', is_open and '1' or '0', 'opened_at', opened)
local ttl_ms = math.ceil((math.max(window, cooldown) + tonumber(ARGV[6])) * 1000)
redis.call('PEXPIRE', KEYS[1], ttl_ms)
redis.call('PEXPIRE', KEYS[2], ttl_ms)
return {is_open and 1 or 0, redis.call('ZCARD', KEYS[2]), string.format('%.17g', opened)}
