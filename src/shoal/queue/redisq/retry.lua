-- ARGV: force ('1' or '0'), first ('1' or '0'), job ids. Failed or cancelled jobs (with
-- force, done ones too) start afresh: attempt 1, their result and logs gone; pending
-- (before every never-run job of their priority with first, else at their seq), or
-- waiting if their dependencies are not all done, or ended again at once if one failed.
-- The jobs that had ended because one of them did (never run: their record names it)
-- come back waiting, and theirs in turn. Returns the asked ids that are no longer final.
local force, first = ARGV[1] == '1', ARGV[2] == '1'
local moved, woken = {}, 0

local function fresh(id)  -- the old result, logs and failed attempts' records go
  redis.call('HDEL', RESULT, id)
  redis.call('HDEL', LOGS, id)
  for n = 1, attempt_of(id) do
    redis.call('HDEL', FAILED, id .. '.' .. n)
    redis.call('HDEL', LOGS, id .. '.' .. n)
  end
  set_attempt(id, 1)
end

local function placed(id, state)
  if state == 'pending' then woken = woken + 1 end
  if state == 'pending' or state == 'waiting' then moved[id] = true end
  return moved[id]
end

-- Bring back the jobs that ended because `id` did, transitively.
local function bring_back(id)
  local stack = {id}
  while #stack > 0 do
    local dep = table.remove(stack)
    for _, dependant in ipairs(dependants_of(dep)) do
      local state = redis.call('HGET', STATE, dependant)
      if state == 'failed' or state == 'cancelled' then
        local record = cjson.decode(redis.call('HGET', RESULT, dependant))
        if record.dep == dep then
          fresh(dependant)
          if placed(dependant, place(dependant, state, seq_of(dependant),
                                     deps_of(dependant))) then
            stack[#stack + 1] = dependant
          end
        end
      end
    end
  end
end

for i = 3, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', STATE, id)
  if state == 'failed' or state == 'cancelled' or (force and state == 'done') then
    fresh(id)
    if state == 'done' then  -- its waiting dependants wait for it again
      for _, dependant in ipairs(dependants_of(id)) do
        if redis.call('HGET', STATE, dependant) == 'waiting' then
          redis.call('HINCRBY', UNMET, dependant, 1)
        end
      end
    end
    local rank = seq_of(id) - (first and RANK_SHIFT or 0)
    if placed(id, place(id, state, rank, deps_of(id))) then bring_back(id) end
  end
end
if woken > 0 then wake(woken) end
local again = {}
for i = 3, #ARGV do
  if moved[ARGV[i]] then
    again[#again + 1] = ARGV[i]
    moved[ARGV[i]] = nil  -- each id once
  end
end
return again
