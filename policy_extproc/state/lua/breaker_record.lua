-- Count one upstream outcome in a provider's circuit breaker, shared by every replica.
-- closed -> open after `threshold` failures within `window` or, with a ratio (>= 0), once at
-- least `min_requests` outcomes in the window hold that share of failures; open -> half_open
-- once `cooldown` has passed (derived, not stored); half_open -> closed on a success, or open
-- again (a new cooldown) on a failure.
--
-- KEYS[1] breaker (hash: open 0|1, opened_at, seq), KEYS[2] failure times, KEYS[3] success
-- times (sorted sets; successes are kept in ratio mode only)
-- ARGV  now, ok 0|1, window s, threshold, cooldown s, keep s, ratio (-1: none), min_requests
-- Returns {open 0|1, failures in window, opened_at (string)}

local now, ok = tonumber(ARGV[1]), ARGV[2] == '1'
local window, threshold, cooldown = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local ratio, min_requests = tonumber(ARGV[7]), tonumber(ARGV[8])
local is_open = redis.call('HGET', KEYS[1], 'open') == '1'
local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at')) or 0

redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
local half_open = is_open and now >= opened + cooldown
if half_open and ok then
  is_open = false
  redis.call('DEL', KEYS[2], KEYS[3])
elseif half_open then
  opened = now
elseif not is_open then
  if not ok or ratio >= 0 then
    -- members must be unique, two outcomes can share a timestamp
    local times = ok and KEYS[3] or KEYS[2]
    redis.call('ZADD', times, now, redis.call('HINCRBY', KEYS[1], 'seq', 1))
  end
  local failures = redis.call('ZCARD', KEYS[2])
  local trips
  if ratio < 0 then
    trips = failures >= threshold
  else
    local total = failures + redis.call('ZCARD', KEYS[3])
    trips = failures > 0 and total >= min_requests and failures >= ratio * total
  end
  if trips then
    is_open, opened = true, now
  end
end

redis.call('HSET', KEYS[1], 'open', is_open and '1' or '0', 'opened_at', opened)
local ttl_ms = math.ceil((math.max(window, cooldown) + tonumber(ARGV[6])) * 1000)
redis.call('PEXPIRE', KEYS[1], ttl_ms)
redis.call('PEXPIRE', KEYS[2], ttl_ms)
redis.call('PEXPIRE', KEYS[3], ttl_ms)
return {is_open and 1 or 0, redis.call('ZCARD', KEYS[2]), string.format('%.17g', opened)}
