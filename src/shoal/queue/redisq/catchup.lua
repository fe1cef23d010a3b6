-- ARGV: job ids. Returns {newest finals entry id, entries ever added, oldest entry id,
-- entries kept, the state of each id (false if unknown)}: read together, so a result
-- recorded after this read is in the stream after the newest id returned.
local newest, added, oldest, length = '0-0', 0, '0-0', 0
if redis.call('EXISTS', FINALS) == 1 then
  local info = redis.call('XINFO', 'STREAM', FINALS)
  for i = 1, #info, 2 do
    local key, value = info[i], info[i + 1]
    if key == 'last-generated-id' then newest = value
    elseif key == 'entries-added' then added = value
    elseif key == 'length' then length = value
    elseif key == 'first-entry' and value then oldest = value[1] end
  end
end
local states = {}
for i, id in ipairs(ARGV) do states[i] = redis.call('HGET', STATE, id) end
return {newest, added, oldest, length, states}
