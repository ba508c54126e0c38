-- Replace a request's reservation with its real cost, once.
--
-- KEYS[1] the org's reservation index, KEYS[2] the request's reservation
-- ARGV  now, request id, key prefix, late keep s,
--       n, then n pairs (budget key, actual micros), m, then m pairs (limiter key, actual units)
-- Returns 1 if a reservation was reconciled, 0 if there was none (unknown, or done already).

local now, id = tonumber(ARGV[1]), ARGV[2]
sweep(KEYS[1], ARGV[3], now, 16, math.ceil(tonumber(ARGV[4]) * 1000))

local state = redis.call('HGET', KEYS[2], '~s')
if not state then return 0 end

local usd, units = {}, {}
local a = 6
for _ = 1, tonumber(ARGV[5]) do
  usd[ARGV[a]] = tonumber(ARGV[a + 1])
  a = a + 2
end
local m = tonumber(ARGV[a])
a = a + 1
for _ = 1, m do
  units[ARGV[a]] = tonumber(ARGV[a + 1])
  a = a + 2
end

local fields = redis.call('HGETALL', KEYS[2])
local interval = intervals(fields)
for i = 1, #fields, 2 do
  local kind, key, est = string.sub(fields[i], 1, 2), string.sub(fields[i], 3), tonumber(fields[i + 1])
  if kind == 'b:' then
    -- A budget the caller does not name is charged at its estimate. The sweep gave an expired
    -- reservation's estimate back already, so that one is charged in full.
    local reserved = 0
    if state == 'open' then reserved = est end
    local delta = (usd[key] or est) - reserved
    if delta ~= 0 and redis.call('EXISTS', key) == 1 then redis.call('INCRBY', key, delta) end
  elseif kind == 'c:' and units[key] then
    shift_tat(key, units[key] - est, interval[key], now)
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[1], id)
return 1
