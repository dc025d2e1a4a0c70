-- Settle one request: release its holds, add the actual cost to every scope,
-- append the ledger entry and update rollups -- all or nothing, exactly once.
-- Every amount is integer nano-USD, so the ledger, the counters and the rollups sum alike.
--
-- KEYS: 1 done marker, 2 ledger stream, 3 request index hash, 4 rollup hash,
--       5 top-tier output-length hash (what the counterfactual learns from),
--       then nh (spend, holds) pairs of held scopes, then ns spend hashes to charge.
-- ARGV: 1 request id, 2 hold member, 3 record json, 4 trim kind (MAXLEN|MINID), 5 trim arg,
--       6 integers, space-separated: held nano-USD, cost nano-USD, counterfactual nano-USD,
--         prompt, cached, completion, reasoning tokens, nh, ns, done ttl s, retention s,
--         counterfactual estimated (0|1), billed failed attempts, top-tier calls to learn from,
--         their completion tokens, their prompt tokens, the client's own prompt tokens (counted)
--       7 strings, unit-separator (0x1f) joined: day, month, rollup prefix, tenant, key id, tier,
--         model, complexity bucket
--       8 nano-USD to charge each of the ns spend hashes, space-separated (model scopes get
--         the cost of their own model's calls; the others the whole cost)
-- Rollup fields are <prefix><metric> with prefix "key|tier|model|bucket|workflow|", so a report
-- can group by any combination of those (and by day and tenant: the hash's own key).
local n = {}
for v in string.gmatch(ARGV[6], '%S+') do n[#n + 1] = tonumber(v) end
local s = {}
for v in string.gmatch(ARGV[7] .. '\31', '([^\31]*)\31') do s[#s + 1] = v end
local held, cost, cf = n[1], n[2], n[3]
local nh, ns = n[8], n[9]
local base = 5
-- Releasing is idempotent on its own (ZREM says whether the hold was still there),
-- so do it even for a duplicate settle: a replayed record must still free its hold.
for i = 0, nh - 1 do
  if redis.call('ZREM', KEYS[base + 2 + 2*i], ARGV[2]) == 1 then
    redis.call('HINCRBY', KEYS[base + 1 + 2*i], 'reserved', -held)
  end
end
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', n[10]) then
  return 0
end
local dayf, monthf = 'd:' .. s[1], 'm:' .. s[2]
local i = 0
for v in string.gmatch(ARGV[8], '%S+') do
  local k, c = KEYS[base + 1 + 2*nh + i], tonumber(v)
  redis.call('HINCRBY', k, dayf, c)
  redis.call('HINCRBY', k, monthf, c)
  redis.call('HINCRBY', k, 't', c)
  i = i + 1
end
local sid = redis.call('XADD', KEYS[2], ARGV[4], '~', ARGV[5], '*', 'rid', ARGV[1], 'd', ARGV[3])
local pre = s[3]
redis.call('HSET', KEYS[3], 'sid', sid, 'tenant', s[4], 'key_id', s[5], 'tier', s[6],
  'model', s[7], 'cx', s[8], 'day', s[1], 'cost', cost, 'pre', pre)
redis.call('EXPIRE', KEYS[3], n[11])
local rk = KEYS[4]
redis.call('HINCRBY', rk, pre .. 'n', 1)
redis.call('HINCRBY', rk, pre .. 'cost', cost)
redis.call('HINCRBY', rk, pre .. 'cf', cf)
redis.call('HINCRBY', rk, pre .. 'pt', n[4])
redis.call('HINCRBY', rk, pre .. 'cached', n[5])
redis.call('HINCRBY', rk, pre .. 'ct', n[6])
redis.call('HINCRBY', rk, pre .. 'rt', n[7])
if n[12] == 1 then redis.call('HINCRBY', rk, pre .. 'cfe', 1) end
if n[13] > 0 then redis.call('HINCRBY', rk, pre .. 'bf', n[13]) end
redis.call('EXPIRE', rk, n[11])
if n[14] > 0 then
  redis.call('HINCRBY', KEYS[5], s[8] .. '|reqs', 1)
  redis.call('HINCRBY', KEYS[5], s[8] .. '|calls', n[14])
  redis.call('HINCRBY', KEYS[5], s[8] .. '|ct', n[15])
  redis.call('HINCRBY', KEYS[5], s[8] .. '|pt', n[16])
  redis.call('HINCRBY', KEYS[5], s[8] .. '|cp', n[17])
end
return 1
