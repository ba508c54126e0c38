-- Admit one request: check every GCRA limiter and every budget, then consume and reserve all
-- of them, or change nothing. Redis runs a script atomically (no other client's command runs
-- between its reads and its writes), and phase 1 only reads: a refusal writes nothing, so the
-- step is all or none across every key of the request.
--
-- KEYS[1]           the org's reservation index (sorted set: request id -> deadline)
-- KEYS[2]           this request's reservation (hash, see reservations.lua)
-- KEYS[2 + i]       limiter i: its theoretical arrival time (TAT), epoch seconds
-- KEYS[2 + nl + j]  budget j: micro-USD spent, reservations included
-- ARGV  now, request id, key prefix, reservation ttl s, record keep s, late keep s, nl, nb,
--       then one argument per limiter: "interval_s capacity cost estimated(0|1)",
--       then one argument per budget:  "limit_micros amount_micros ttl_s enforce(0|1)"
--       (a group travels as one argument: the client spends more encoding many arguments
--       than the script spends splitting a few)
-- Returns one string of space-separated numbers (a client parses it faster than a nested
-- reply): admitted 0|1, 1-based index of the first refusal or 0,
--   per limiter: remaining, reset after s, retry after s; per budget: micros before, after.
--
-- `now` comes from the caller rather than TIME: tests drive time, and every ttl below is
-- relative to it, so keys expire correctly whatever clock the caller uses.

local now = tonumber(ARGV[1])
local id, prefix = ARGV[2], ARGV[3]
local res_ttl, keep, late = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local nl, nb = tonumber(ARGV[7]), tonumber(ARGV[8])
local ROUNDING = 0.01 -- as GCRA_ROUNDING in base.py
local GROUP = '^(%S+) (%S+) (%S+) (%S+)$'

local limiters, budgets = {}, {}
for i = 1, nl do
  local interval, cap, cost, est = string.match(ARGV[8 + i], GROUP)
  limiters[i] = {key = KEYS[2 + i], interval = tonumber(interval), cap = tonumber(cap),
                 cost = tonumber(cost), estimated = est == '1'}
end
for j = 1, nb do
  local limit, amount, ttl, enforce = string.match(ARGV[8 + nl + j], GROUP)
  budgets[j] = {key = KEYS[2 + nl + j], limit = tonumber(limit), amount = tonumber(amount),
                ttl = tonumber(ttl), enforce = enforce == '1'}
end

sweep(KEYS[1], prefix, now, 16, math.ceil(late * 1000))

-- Phase 1: read and check. The overlays (tat, spent) let a key named twice in one request be
-- checked against its own first use.
local tat, spent = {}, {}
local denied = 0
local reserve = nb > 0
for i, l in ipairs(limiters) do
  local t = tat[l.key] or tonumber(redis.call('GET', l.key)) or now
  if t < now then t = now end
  l.base, l.new = t, t + l.cost * l.interval
  l.fits = l.new - now <= (l.cap + ROUNDING) * l.interval
  if l.fits then
    tat[l.key] = l.new
  else
    tat[l.key] = t
    if denied == 0 then denied = i end
  end
  if l.estimated then reserve = true end
end
for j, b in ipairs(budgets) do
  local s = spent[b.key] or tonumber(redis.call('GET', b.key)) or 0
  b.before, spent[b.key] = s, s + b.amount
  -- a spent budget refuses even a request estimated at zero
  if b.enforce and denied == 0 and not (s < b.limit and s + b.amount <= b.limit) then
    denied = nl + j
  end
end

-- Phase 2: write, only if everything passed.
local admitted = denied == 0
local res = KEYS[2]
if admitted then
  if reserve and redis.call('HGET', res, '~s') ~= 'open' then
    -- a reused request id adds to its open reservation, so nothing reserved ever leaks
    redis.call('DEL', res)
    redis.call('HSET', res, '~s', 'open')
    redis.call('ZADD', KEYS[1], now + res_ttl, id)
  end
  for _, l in ipairs(limiters) do
    local t = tat[l.key] -- a key named twice: every write carries its final value
    redis.call('SET', l.key, t, 'PX', math.ceil((t - now) * 1000) + SLACK_MS)
    if l.estimated then
      redis.call('HINCRBY', res, 'c:' .. l.key, l.cost)
      redis.call('HSET', res, 't:' .. l.key, l.interval)
    end
  end
  for _, b in ipairs(budgets) do
    redis.call('INCRBY', b.key, b.amount)
    redis.call('PEXPIRE', b.key, math.ceil(b.ttl * 1000))
    redis.call('HINCRBY', res, 'b:' .. b.key, b.amount)
  end
  if reserve then
    local ttl_ms = math.ceil((res_ttl + keep) * 1000)
    redis.call('PEXPIRE', res, ttl_ms)
    if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
  end
end

local out = {admitted and 1 or 0, denied}
for _, l in ipairs(limiters) do
  local t = admitted and l.new or l.base
  local left = math.floor(l.cap - (t - now) / l.interval + ROUNDING)
  local wait = 0
  if not l.fits then
    if l.cost > l.cap then wait = math.huge else wait = math.max(l.new - now - l.cap * l.interval, 0) end
  end
  out[#out + 1] = math.max(left, 0)
  out[#out + 1] = t - now
  out[#out + 1] = wait
end
for _, b in ipairs(budgets) do
  out[#out + 1] = b.before
  out[#out + 1] = admitted and b.before + b.amount or b.before
end
for k, v in ipairs(out) do out[k] = string.format('%.17g', v) end -- tostring keeps 14 digits
return table.concat(out, ' ')
