-- Take a pending response's payload: read and delete in one step, so of an observe stream and
-- the expiry of the same request exactly one gets it (serve --response-accounting observe).
-- KEYS[1]: pe:{<org>}:pend:<request id>. Returns the payload, or false when absent.
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
end
return value
