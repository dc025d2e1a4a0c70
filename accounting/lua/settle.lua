-- Settle one request: release its holds, add the actual cost to every scope,
-- append the ledger entry and update rollups -- all or nothing, exactly once.
--
-- KEYS: 1 done marker, 2 ledger stream, 3 request index hash, 4 rollup hash,
--       then nh (spend, holds) pairs of held scopes, then ns spend hashes to charge.
-- ARGV: 1 request id, 2 hold member, 3 record json, 4 trim kind (MAXLEN|MINID), 5 trim arg,
--       6 integers, space-separated: held nano-USD, cost nano-USD, counterfactual nano-USD,
--         prompt, cached, completion, reasoning tokens, nh, ns, done ttl s, retention s
--       7 strings, unit-separator (0x1f) joined: day, month, rollup prefix, complexity prefix,
--         tenant, key id, tier, model, complexity bucket
--       8 nano-USD to charge each of the ns spend hashes, space-separated (model scopes get
--         the cost of their own model's calls; the others the whole cost)
-- (Packed because redis-py encodes each argument separately: two args instead of twenty
-- is a measurable share of the client's CPU per request.)
local n = {}
for v in string.gmatch(ARGV[6], '%S+') do n[#n + 1] = tonumber(v) end
local s = {}
for v in string.gmatch(ARGV[7] .. '\31', '([^\31]*)\31') do s[#s + 1] = v end
local held, cost, cf = n[1], n[2], n[3]
local nh, ns = n[8], n[9]
-- Releasing is idempotent on its own (ZREM says whether the hold was still there),
-- so do it even for a duplicate settle: a replayed record must still free its hold.
for i = 0, nh - 1 do
  if redis.call('ZREM', KEYS[6 + 2*i], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[5 + 2*i], 'reserved', -held)
  end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', n[10]) then
  return 0
end
local dayf, monthf = 'd:' .. s[1], 'm:' .. s[2]
local i = 0
for v in string.gmatch(ARGV[8], '%S+') do
  local k, c = KEYS[5 + 2*nh + i], tonumber(v)
  redis.call('HINCRBY', k, dayf, c)
  redis.call('HINCRBY', k, monthf, c)
  redis.call('HINCRBY', k, 't', c)
  i = i + 1
end
local sid = redis.call('XADD', KEYS[2], ARGV[4], '~', ARGV[5], '*', 'rid', ARGV[1], 'd', ARGV[3])
redis.call('HSET', KEYS[3], 'sid', sid, 'tenant', s[5], 'key_id', s[6], 'tier', s[7],
  'model', s[8], 'cx', s[9], 'day', s[1], 'cost', cost)
redis.call('EXPIRE', KEYS[3], n[11])
local rk, pre, cx = KEYS[4], s[3], s[4]
redis.call('HINCRBY', rk, pre .. 'n', 1)
redis.call('HINCRBY', rk, pre .. 'cost', cost)
redis.call('HINCRBY', rk, pre .. 'cf', cf)
redis.call('HINCRBY', rk, pre .. 'pt', n[4])
redis.call('HINCRBY', rk, pre .. 'cached', n[5])
redis.call('HINCRBY', rk, pre .. 'ct', n[6])
redis.call('HINCRBY', rk, pre .. 'rt', n[7])
redis.call('HINCRBY', rk, cx .. 'n', 1)
redis.call('HINCRBY', rk, cx .. 'cost', cost)
redis.call('HINCRBY', rk, cx .. 'cf', cf)
redis.call('EXPIRE', rk, n[11])
return 1
