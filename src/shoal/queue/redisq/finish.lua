-- ARGV: id, token, result record, final state, worker, then_claim, lease_ms, the
-- attempt's log ('' when none), the capacity then_claim fills ('' for any). Returns
-- false when the lease is not current, else claim.lua's reply for the next leases.
-- A done job releases the jobs waiting for it; a failed one ends them.
local id, state = ARGV[1], ARGV[4]
if not current(id, ARGV[2]) then return false end
end_lease(id)
set_final(id, 'running', state, ARGV[3])
if ARGV[8] ~= '' then redis.call('HSET', LOGS, id, ARGV[8]) end
if state == 'done' then
  local released = release_dependants(id)
  if released > 0 then wake(released) end
else
  end_dependants(id, state)
end
local n = tonumber(ARGV[6])
if n > 0 then
  return claim_reply(claim(ARGV[5], n, tonumber(ARGV[7]), capacity_of(ARGV[9])))
end
return {false, {}, 0}
