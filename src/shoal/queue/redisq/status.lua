-- ARGV: job ids. Returns, per id, false or {spec, payload, state, attempt, worker,
-- result, records of the failed attempts before this one, seq}: one consistent read.
local function status(id)
  local spec = redis.call('HGET', SPEC, id)
  if not spec then return false end
  local attempt = attempt_of(id)
  local records = {}
  if attempt > 1 then
    local fields = {}
    for n = 1, attempt - 1 do fields[n] = id .. '.' .. n end
    records = redis.call('HMGET', FAILED, unpack(fields))
  end
  return {spec, redis.call('HGET', PAYLOAD, id), redis.call('HGET', STATE, id), attempt,
          redis.call('HGET', OWNER, id), redis.call('HGET', RESULT, id), records,
          tonumber(redis.call('HGET', NUMBERS, id)) or 0}
end

local rows = {}
for i, id in ipairs(ARGV) do rows[i] = status(id) end
return rows
