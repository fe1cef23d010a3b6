-- ARGV[1]: the states wanted, space-separated ('' for every state); ARGV[2..]: job ids.
-- Returns, per id, false (unknown, or in another state) or {spec, payload, state,
-- attempt, worker, result, seq}: status.lua's read without the failed attempts' records.
local wanted = nil
if ARGV[1] ~= '' then
  wanted = {}
  for state in string.gmatch(ARGV[1], '%S+') do wanted[state] = true end
end
local rows = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', STATE, id)
  local row = false
  if state and (wanted == nil or wanted[state]) then
    local spec = redis.call('HGET', SPEC, id)
    if spec then
      row = {spec, redis.call('HGET', PAYLOAD, id), state, attempt_of(id),
             redis.call('HGET', OWNER, id), redis.call('HGET', RESULT, id),
             tonumber(redis.call('HGET', NUMBERS, id)) or 0}
    end
  end
  rows[i - 1] = row
end
return rows
