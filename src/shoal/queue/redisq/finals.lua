-- The finals stream as a journal of jobs that became final. ARGV: a mark {entry id,
-- entries ever added} and the most ids to return, or nothing (just the mark of now).
-- Returns {entry id, entries added} of the new mark, then the ids after the old mark;
-- or false when entries after the old mark were trimmed away (the caller scans).
local function order(entry)
  local ms, seq = string.match(entry, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function after(a, b)  -- entry id a comes after entry id b
  local ams, aseq = order(a)
  local bms, bseq = order(b)
  return ams > bms or (ams == bms and aseq > bseq)
end

local newest, added, oldest, length = '0-0', 0, nil, 0
if redis.call('EXISTS', FINALS) == 1 then
  local info = redis.call('XINFO', 'STREAM', FINALS)
  for i = 1, #info, 2 do
    local key, value = info[i], info[i + 1]
    if key == 'last-generated-id' then newest = value
    elseif key == 'entries-added' then added = tonumber(value)
    elseif key == 'length' then length = tonumber(value)
    elseif key == 'first-entry' and value then oldest = value[1] end
  end
end
if #ARGV == 0 then return {newest, added} end

local mark, mark_added, most = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if added < mark_added or after(mark, newest) then return false end  -- a new stream
-- Entries after the mark were trimmed when more were added since than the stream
-- keeps, all of them after the mark (it is trimmed from its oldest end).
if (not oldest or after(oldest, mark)) and added - mark_added > length then return false end
local reply = {mark, mark_added}
if added == mark_added then return reply end
local entries = redis.call('XRANGE', FINALS, mark, '+', 'COUNT', most + 1)
local ends, count = mark, mark_added
for _, entry in ipairs(entries) do
  if entry[1] ~= mark and count - mark_added < most then
    ends, count = entry[1], count + 1
    reply[#reply + 1] = entry[2][2]  -- fields: 'id', job id
  end
end
reply[1], reply[2] = ends, count
return reply
