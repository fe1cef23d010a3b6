-- ARGV: reason, what a result names as a job's log (the queue's URL and '#log='), then
-- job ids. Cancels those not yet final; returns their ids. A running job's lease ends
-- here, so its worker's finish is refused; its record names the worker, and the log
-- tail its beats shipped becomes the job's log (the worker adds the rest: keeplog.lua).
-- Then the jobs waiting for them end cancelled too (after every asked one is, so each
-- asked one's record says the user cancelled it).
local done = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', STATE, id)
  if state == 'pending' or state == 'running' or state == 'waiting' then
    local record = {job_id = id, state = 'cancelled', reason = ARGV[1], attempt = attempt_of(id)}
    if state == 'running' then
      record.worker = redis.call('HGET', OWNER, id) or ''
      record.log = ARGV[2] .. id
      local tail = redis.call('HGET', TAILS, id)
      if tail then redis.call('HSET', LOGS, id, tail) end
      end_lease(id)
    elseif state == 'pending' then
      leave_line(id)
    else
      redis.call('HDEL', UNMET, id)
    end
    set_final(id, state, 'cancelled', cjson.encode(record))
    done[#done + 1] = id
  end
end
for _, id in ipairs(done) do end_dependants(id, 'cancelled') end
return done
