-- ARGV: worker, n, lease_ms. Returns leases {id, attempt, token, spec, payload}.
return claim(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
