-- Read every pushed policy and the version they are at, in one atomic step (a script runs on
-- one node, so this works on a Redis Cluster too, where MULTI pipelines are fragile).
--
-- KEYS[1] hash: policy name -> policy text;  KEYS[2] the change counter (version)
-- Returns {version (0 when unset), {name, text, name, text, ...}}

return {tonumber(redis.call('GET', KEYS[2]) or '0'), redis.call('HGETALL', KEYS[1])}
