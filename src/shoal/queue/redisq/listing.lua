-- ARGV[1]: the states wanted, space-separated ('' for every state); ARGV[2..]: job ids.
-- status.lua's read without the failed attempts' records, for many jobs at once. Returns
-- {rows, id, payload, id, payload, ...}: rows is one JSON array with a row
-- [spec, state, attempt, worker, result, seq] per job listed (unknown ids and other
-- states left out), spec and result spliced in as stored (they are JSON already), so the
-- client decodes one string per batch, not seven replies per job; the binary payloads
-- of call jobs follow, by id.
local wanted = nil
if ARGV[1] ~= '' then
  wanted = {}
  for state in string.gmatch(ARGV[1], '%S+') do wanted[state] = true end
end
local rows, reply = {}, {''}
for i = 2, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', STATE, id)
  local spec = state and (wanted == nil or wanted[state]) and redis.call('HGET', SPEC, id)
  if spec then
    local worker = redis.call('HGET', OWNER, id)
    rows[#rows + 1] = '[' .. spec .. ',' .. cjson.encode(state) .. ',' .. attempt_of(id)
      .. ',' .. (worker and cjson.encode(worker) or 'null') .. ','
      .. (redis.call('HGET', RESULT, id) or 'null') .. ','
      .. (tonumber(redis.call('HGET', NUMBERS, id)) or 0) .. ']'
    local payload = redis.call('HGET', PAYLOAD, id)
    if payload then
      reply[#reply + 1] = id
      reply[#reply + 1] = payload
    end
  end
end
reply[1] = '[' .. table.concat(rows, ',') .. ']'
return reply
