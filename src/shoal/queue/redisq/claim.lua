-- ARGV: worker, n, lease_ms. Returns {config stamp, leases {id, attempt, token, spec,
-- payload}}.
local leases = claim(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
return {#leases > 0 and config_stamp() or false, leases}
