-- ARGV: id, attempt, worker, the attempt's whole log (cut to the cap). A worker whose
-- job was cancelled while it ran keeps that log as the job's, only if the job's final
-- result is the cancel of this very attempt on this worker. Returns 1 if kept.
local id = ARGV[1]
if redis.call('HGET', STATE, id) ~= 'cancelled' then return 0 end
local record = cjson.decode(redis.call('HGET', RESULT, id))
if record.worker ~= ARGV[3] or tonumber(record.attempt) ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', LOGS, id, ARGV[4])
return 1
