-- ARGV[1]: msgpack of [id, spec, payload ('' for none), lane, after (ids), ...];
-- ARGV[2]: msgpack of {lane: shape} for the batch's lanes (SHAPES' values, packed). Returns the ids
-- that were new, or just their number when every one was (the usual case: a short
-- reply). New jobs are numbered in submission order (NUMBERS), one INCRBY for the batch.
-- A job with no `after` joins its lane's list in bulk; the others go one by one where
-- their dependencies say (`place`), their edges recorded in DEPS. The caller checked
-- the ids and cycles (scheduling.check_after) over the whole submission.
local ITEM = 5
local items = cmsgpack.unpack(ARGV[1])
for lane, shape in pairs(cmsgpack.unpack(ARGV[2])) do
  redis.call('HSET', SHAPES, lane, shape)
end
local new = {}  -- index in items of each new job
for i = 1, #items, ITEM do
  local id = items[i]
  if redis.call('HSETNX', SPEC, id, items[i + 1]) == 1 then
    if items[i + 2] ~= '' then redis.call('HSET', PAYLOAD, id, items[i + 2]) end
    new[#new + 1] = i
  end
end
local base = #new > 0 and redis.call('INCRBY', NUMBERED, #new) - #new or 0
local lanes, bulk, lined = {}, 0, 0  -- lined: bulk and placed pending jobs
for first = 1, #new, 1000 do  -- a few commands for many jobs (Lua's stack is finite)
  local last = math.min(first + 999, #new)
  local numbers, states, lines, waiting = {}, {}, {}, {}
  for k = first, last do
    local i = new[k]
    local id, lane, after = items[i], items[i + 3], items[i + 4]
    numbers[#numbers + 1] = id
    numbers[#numbers + 1] = base + k
    if lane ~= 'p0' then redis.call('HSET', LANE, id, lane) end
    if #after == 0 then
      states[#states + 1] = id
      states[#states + 1] = 'pending'
      lines[lane] = lines[lane] or {}
      table.insert(lines[lane], id)
      lanes[lane] = true
    else
      waiting[#waiting + 1] = k
    end
  end
  redis.call('HSET', NUMBERS, unpack(numbers))
  if #states > 0 then
    redis.call('HSET', STATE, unpack(states))
    for lane, ids in pairs(lines) do redis.call('RPUSH', line_key(lane), unpack(ids)) end
    bulk = bulk + #states / 2
  end
  for _, k in ipairs(waiting) do
    local i = new[k]
    local id, after = items[i], items[i + 4]
    for _, dep in ipairs(after) do redis.call('ZADD', DEPS, 0, dep .. '\0' .. id) end
    if place(id, nil, base + k, unique(after)) == 'pending' then lined = lined + 1 end
  end
end
for lane in pairs(lanes) do redis.call('ZADD', LANES, lane_score(lane), lane) end
if bulk > 0 then redis.call('HINCRBY', COUNTS, 'pending', bulk) end  -- place counts its own
lined = lined + bulk
if lined > 0 then wake(lined) end
if #new * ITEM == #items then return #new end
local ids = {}
for k, i in ipairs(new) do ids[k] = items[i] end
return ids
