-- ARGV: id, token, result record, final state, worker, then_claim, lease_ms.
-- Returns false when the lease is not current, else the next leases.
local id = ARGV[1]
if not current(id, ARGV[2]) then return false end
end_lease(id)
set_final(id, 'running', ARGV[4], ARGV[3])
local n = tonumber(ARGV[6])
if n > 0 then return claim(ARGV[5], n, tonumber(ARGV[7])) end
return {}
