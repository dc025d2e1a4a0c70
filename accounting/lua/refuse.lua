-- Record a refused request (429 budget / per-query cap): denied demand is part of the bill's story.
-- No spend is touched. KEYS: 1 ledger stream, 2 rollup hash.
-- ARGV: 1 request id, 2 record json, 3 trim kind, 4 trim arg, 5 rollup prefix, 6 refused estimate nano-USD,
--       7 retention s, 8 reason (budget_exceeded | max_cost_per_query)
redis.call('XADD', KEYS[1], ARGV[3], '~', ARGV[4], '*', 'rid', ARGV[1], 'd', ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[5] .. 'ref', 1)
redis.call('HINCRBY', KEYS[2], ARGV[5] .. 'refest', tonumber(ARGV[6]))
redis.call('HINCRBY', KEYS[2], ARGV[5] .. 'ref:' .. ARGV[8], 1)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
return 1
