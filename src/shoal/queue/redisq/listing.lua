-- ARGV[1]: the states wanted, space-separated ('' for every state); ARGV[2]: 'payloads'
-- to send the binary payloads of call jobs, 'summaries' for summary rows instead of whole
-- records (below), anything else for records without payloads; ARGV[3]: the HSCAN cursor over the jobs' states to
-- go on from; ARGV[4]: how many jobs to look at (HSCAN's COUNT).
-- status.lua's read without the failed attempts' records, for a page of jobs found by
-- scanning here (the ids never travel to the client and back). Returns
-- {rows, cursor, id, payload, id, payload, ...}: rows is one JSON array with a row
-- [spec, state, attempt, worker, result, seq] per job listed (other states left out),
-- spec and result spliced in as stored (they are JSON already), so the client decodes
-- one string per page, not seven replies per job; cursor is '0' after the last page.
local wanted = nil
if ARGV[1] ~= '' then
  wanted = {}
  for state in string.gmatch(ARGV[1], '%S+') do wanted[state] = true end
end
local with_payloads = ARGV[2] == 'payloads'
local page = redis.call('HSCAN', STATE, ARGV[3], 'COUNT', ARGV[4])
local found = page[2]
local rows, reply = {}, {'', page[1]}
local null = cjson.null

-- A summary row: [seq, id, name, state, attempt, worker, exit_code, reason, started,
-- ended, host, log, lost], the fields a results table shows, picked here so the client
-- decodes a few values per job instead of its whole spec and result.
local function summary(id, state, spec)
  local worker = redis.call('HGET', OWNER, id)
  local row = {tonumber(redis.call('HGET', NUMBERS, id)) or 0, id,
               cjson.decode(spec).name or '', state, attempt_of(id), worker or null,
               null, '', null, null, '', null, false}
  local stored = redis.call('HGET', RESULT, id)
  if stored then
    local r = cjson.decode(stored)
    row[4] = r.state or state
    row[5] = r.attempt or row[5]
    if r.worker and r.worker ~= '' then row[6] = r.worker end
    row[7], row[8], row[9], row[10] = r.exit_code or null, r.reason or '', r.started or null,
      r.ended or null
    row[11], row[12], row[13] = r.host or '', r.log or null, r.lost or false
  end
  return cjson.encode(row)
end

for i = 1, #found, 2 do
  local id, state = found[i], found[i + 1]
  local spec = (wanted == nil or wanted[state]) and redis.call('HGET', SPEC, id)
  if spec and ARGV[2] == 'summaries' then
    rows[#rows + 1] = summary(id, state, spec)
  elseif spec then
    local worker = redis.call('HGET', OWNER, id)
    rows[#rows + 1] = '[' .. spec .. ',' .. cjson.encode(state) .. ',' .. attempt_of(id)
      .. ',' .. (worker and cjson.encode(worker) or 'null') .. ','
      .. (redis.call('HGET', RESULT, id) or 'null') .. ','
      .. (tonumber(redis.call('HGET', NUMBERS, id)) or 0) .. ']'
    local payload = with_payloads and redis.call('HGET', PAYLOAD, id)
    if payload then
      reply[#reply + 1] = id
      reply[#reply + 1] = payload
    end
  end
end
reply[1] = '[' .. table.concat(rows, ',') .. ']'
return reply
