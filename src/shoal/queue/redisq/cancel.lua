-- ARGV: reason, then job ids. Cancels those not yet final; returns their ids.
-- A running job's lease ends here, so its worker's finish is refused.
local done = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local state = redis.call('HGET', STATE, id)
  if state == 'pending' or state == 'running' then
    if state == 'running' then end_lease(id) end
    set_final(id, state, 'cancelled', cjson.encode(
      {job_id = id, state = 'cancelled', reason = ARGV[1], attempt = attempt_of(id)}))
    done[#done + 1] = id
  end
end
return done
