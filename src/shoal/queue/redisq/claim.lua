-- ARGV: worker, n, lease_ms, the worker's free capacity (msgpack [free, labels]; ''
-- for any job). Returns {config stamp, leases {id, attempt, token, spec, payload, seq},
-- 1 if jobs stay pending (that did not fit, or beyond n)}.
return claim_reply(claim(ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]),
                         capacity_of(ARGV[4])))
