-- Shared functions, prepended to admit.lua, reconcile.lua, release.lua and sweep.lua.
--
-- A reservation is a hash per request: '~s' = open | expired, 'b:<budget key>' = micro-USD
-- reserved, 'c:<limiter key>' = estimated units, 't:<limiter key>' = that limiter's interval.
-- Its field names carry keys that are not in KEYS. Every one of them starts with the org's
-- prefix pe:{org}:, so they hash to the same Redis Cluster slot as the declared keys, which
-- is what a script that touches undeclared keys must guarantee.

-- A limiter key outlives its last arrival time by this much, so replicas whose clocks differ
-- a little never see a limiter vanish early.
local SLACK_MS = 1000

local function shift_tat(key, units, interval, now)
  if units == 0 or not interval then return end
  local tat = tonumber(redis.call('GET', key)) or now
  -- extra usage counts from now if the limiter had drained meanwhile
  if units > 0 and tat < now then tat = now end
  tat = tat + units * interval
  if tat > now then
    redis.call('SET', key, tat, 'PX', math.ceil((tat - now) * 1000) + SLACK_MS)
  else
    redis.call('DEL', key)
  end
end

local function intervals(fields)
  local out = {}
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 't:' then
      out[string.sub(fields[i], 3)] = tonumber(fields[i + 1])
    end
  end
  return out
end

local function give_back(res, budgets, tokens, now)
  local fields = redis.call('HGETALL', res)
  local interval = intervals(fields)
  for i = 1, #fields, 2 do
    local kind, key = string.sub(fields[i], 1, 2), string.sub(fields[i], 3)
    if kind == 'b:' and budgets then
      -- a counter whose period is gone is not recreated: nobody reads it any more
      if redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, fields[i + 1]) end
    elseif kind == 'c:' and tokens then
      shift_tat(key, -tonumber(fields[i + 1]), interval[key], now)
    end
  end
end

-- Releases up to `max` reservations whose deadline has passed: budgets go back, tokens stay
-- charged (the call most likely happened). The record stays a while as a tombstone, so a
-- late reconcile still charges the real cost. Returns released, looked at.
local function sweep(index, prefix, now, max, late_ms)
  local due = redis.call('ZRANGEBYSCORE', index, '-inf', now, 'LIMIT', 0, max)
  local released = 0
  for _, id in ipairs(due) do
    local res = prefix .. 'res:' .. id
    if redis.call('HGET', res, '~s') == 'open' then
      give_back(res, true, false, now)
      redis.call('HSET', res, '~s', 'expired')
      redis.call('PEXPIRE', res, late_ms)
      released = released + 1
    end
    redis.call('ZREM', index, id)
  end
  return released, #due
end
