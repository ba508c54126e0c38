-- Release the org's reservations whose deadline has passed, a batch at a time.
--
-- KEYS[1] the org's reservation index
-- ARGV  now, key prefix, batch size, late keep s
-- Returns {released, looked at, reservations left in the index}

local released, seen = sweep(KEYS[1], ARGV[2], tonumber(ARGV[1]), tonumber(ARGV[3]),
  math.ceil(tonumber(ARGV[4]) * 1000))
return {released, seen, redis.call('ZCARD', KEYS[1])}
