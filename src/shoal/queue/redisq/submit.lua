-- ARGV[1]: msgpack of [id, spec, payload ('' for none), ...]. Returns the ids that were
-- new, or just their number when every one was (the usual case: a short reply). New
-- jobs are numbered in submission order (NUMBERS), one INCRBY for the batch.
local items = cmsgpack.unpack(ARGV[1])
local new, states = {}, {}
for i = 1, #items, 3 do
  local id = items[i]
  if redis.call('HSETNX', SPEC, id, items[i + 1]) == 1 then
    if items[i + 2] ~= '' then redis.call('HSET', PAYLOAD, id, items[i + 2]) end
    new[#new + 1] = id
    states[#states + 1] = id
    states[#states + 1] = 'pending'
  end
end
local base = #new > 0 and redis.call('INCRBY', NUMBERED, #new) - #new or 0
for first = 1, #new, 1000 do  -- a few commands for many jobs (Lua's stack is finite)
  local last = math.min(first + 999, #new)
  local numbers = {}
  for i = first, last do
    numbers[#numbers + 1] = new[i]
    numbers[#numbers + 1] = base + i
  end
  redis.call('HSET', NUMBERS, unpack(numbers))
  redis.call('RPUSH', PENDING, unpack(new, first, last))
  redis.call('HSET', STATE, unpack(states, 2 * first - 1, 2 * last))
end
if #new > 0 then
  redis.call('HINCRBY', COUNTS, 'pending', #new)
  wake(#new)
end
if #new * 3 == #items then return #new end
return new
