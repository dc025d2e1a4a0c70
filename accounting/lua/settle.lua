-- Settle one request: release its holds, add the actual cost to every scope,
-- append the ledger entry and update rollups -- all or nothing, exactly once.
--
-- KEYS: 1 done marker, 2 ledger stream, 3 request index hash, 4 rollup hash,
--       then nh (spend, holds) pairs of held scopes, then ns spend hashes to charge.
-- ARGV: 1 request id, 2 hold member, 3 held nano-USD, 4 cost nano-USD, 5 day, 6 month,
--       7 done ttl s, 8 record json, 9 trim kind (MAXLEN|MINID), 10 trim arg, 11 retention s,
--       12 nh, 13 ns, 14 rollup prefix, 15 complexity prefix, 16 counterfactual nano-USD,
--       17 prompt, 18 cached, 19 completion, 20 reasoning tokens,
--       21 tenant, 22 key id, 23 tier, 24 model, 25 complexity bucket
local nh, ns = tonumber(ARGV[12]), tonumber(ARGV[13])
local held = tonumber(ARGV[3])
-- Releasing is idempotent on its own (ZREM says whether the hold was still there),
-- so do it even for a duplicate settle: a replayed record must still free its hold.
for i = 0, nh - 1 do
  if redis.call('ZREM', KEYS[6 + 2*i], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[5 + 2*i], 'reserved', -held)
  end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', tonumber(ARGV[7])) then
  return 0
end
local cost = tonumber(ARGV[4])
local dayf, monthf = 'd:' .. ARGV[5], 'm:' .. ARGV[6]
for i = 0, ns - 1 do
  local k = KEYS[5 + 2*nh + i]
  redis.call('HINCRBY', k, dayf, cost)
  redis.call('HINCRBY', k, monthf, cost)
  redis.call('HINCRBY', k, 't', cost)
end
local sid = redis.call('XADD', KEYS[2], ARGV[9], '~', ARGV[10], '*', 'rid', ARGV[1], 'd', ARGV[8])
local ret = tonumber(ARGV[11])
redis.call('HSET', KEYS[3], 'sid', sid, 'tenant', ARGV[21], 'key_id', ARGV[22], 'tier', ARGV[23],
  'model', ARGV[24], 'cx', ARGV[25], 'day', ARGV[5], 'cost', ARGV[4])
redis.call('EXPIRE', KEYS[3], ret)
local rk, pre, cx = KEYS[4], ARGV[14], ARGV[15]
redis.call('HINCRBY', rk, pre .. 'n', 1)
redis.call('HINCRBY', rk, pre .. 'cost', cost)
redis.call('HINCRBY', rk, pre .. 'cf', tonumber(ARGV[16]))
redis.call('HINCRBY', rk, pre .. 'pt', tonumber(ARGV[17]))
redis.call('HINCRBY', rk, pre .. 'cached', tonumber(ARGV[18]))
redis.call('HINCRBY', rk, pre .. 'ct', tonumber(ARGV[19]))
redis.call('HINCRBY', rk, pre .. 'rt', tonumber(ARGV[20]))
redis.call('HINCRBY', rk, cx .. 'n', 1)
redis.call('HINCRBY', rk, cx .. 'cost', cost)
redis.call('HINCRBY', rk, cx .. 'cf', tonumber(ARGV[16]))
redis.call('EXPIRE', rk, ret)
return 1
