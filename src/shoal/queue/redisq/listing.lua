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

-- The page's jobs in the states wanted, then each field of them read by one HMGET per
-- hash (a call per job and field costs most of a listing's time in the server).
local ids, states = {}, {}
for i = 1, #found, 2 do
  if wanted == nil or wanted[found[i + 1]] then
    ids[#ids + 1] = found[i]
    states[#ids] = found[i + 1]
  end
end
if #ids == 0 then
  reply[1] = '[]'
  return reply
end
local specs = redis.call('HMGET', SPEC, unpack(ids))
local owners = redis.call('HMGET', OWNER, unpack(ids))
local results = redis.call('HMGET', RESULT, unpack(ids))
local numbers = redis.call('HMGET', NUMBERS, unpack(ids))
local attempts = redis.call('HMGET', ATTEMPT, unpack(ids))
local payloads = with_payloads and redis.call('HMGET', PAYLOAD, unpack(ids)) or {}

-- A summary row: [seq, id, name, state, attempt, worker, exit_code, reason, started,
-- ended, host, log, lost, dep, dep_name], the fields a results table shows, picked here
-- so the client decodes a few values per job instead of its whole spec and result.
local function summary(k)
  local row = {tonumber(numbers[k]) or 0, ids[k], cjson.decode(specs[k]).name or '',
               states[k], tonumber(attempts[k]) or 1, owners[k] or null,
               null, '', null, null, '', null, false, null, ''}
  if results[k] then
    local r = cjson.decode(results[k])
    row[4] = r.state or row[4]
    row[5] = r.attempt or row[5]
    if r.worker and r.worker ~= '' then row[6] = r.worker end
    row[7], row[8], row[9], row[10] = r.exit_code or null, r.reason or '', r.started or null,
      r.ended or null
    row[11], row[12], row[13] = r.host or '', r.log or null, r.lost or false
    row[14], row[15] = r.dep or null, r.dep_name or ''
  end
  return cjson.encode(row)
end

for k = 1, #ids do
  if specs[k] and ARGV[2] == 'summaries' then
    rows[#rows + 1] = summary(k)
  elseif specs[k] then
    rows[#rows + 1] = '[' .. specs[k] .. ',' .. cjson.encode(states[k]) .. ','
      .. (tonumber(attempts[k]) or 1) .. ','
      .. (owners[k] and cjson.encode(owners[k]) or 'null') .. ','
      .. (results[k] or 'null') .. ',' .. (tonumber(numbers[k]) or 0) .. ']'
    if payloads[k] then
      reply[#reply + 1] = ids[k]
      reply[#reply + 1] = payloads[k]
    end
  end
end
reply[1] = '[' .. table.concat(rows, ',') .. ']'
return reply
