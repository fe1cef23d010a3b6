-- ARGV: id, token, result record, final state, worker, then_claim, lease_ms, the
-- attempt's log ('' when none). Returns false when the lease is not current, else
-- {config stamp, the next leases}.
local id = ARGV[1]
if not current(id, ARGV[2]) then return false end
end_lease(id)
set_final(id, 'running', ARGV[4], ARGV[3])
if ARGV[8] ~= '' then redis.call('HSET', LOGS, id, ARGV[8]) end
local n = tonumber(ARGV[6])
if n > 0 then
  local leases = claim(ARGV[5], n, tonumber(ARGV[7]))
  return {#leases > 0 and config_stamp() or false, leases}
end
return {false, {}}
