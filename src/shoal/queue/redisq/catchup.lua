-- ARGV: job ids. Returns {newest finals entry id, oldest one ('0-0' for none), the state
-- of each id (false if unknown)}: read together, so a result recorded after this read
-- is in the stream after the newest id returned.
local newest = redis.call('XREVRANGE', FINALS, '+', '-', 'COUNT', 1)
local oldest = redis.call('XRANGE', FINALS, '-', '+', 'COUNT', 1)
local states = {}
for i, id in ipairs(ARGV) do states[i] = redis.call('HGET', STATE, id) end
return {newest[1] and newest[1][1] or '0-0', oldest[1] and oldest[1][1] or '0-0', states}
