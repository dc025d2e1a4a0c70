-- Rate a request: set its quality and move the rollup sums, re-rating replaces the old score.
-- KEYS: 1 request index hash, 2 that request's rollup hash.
-- ARGV: 1 tenant (must own the record), 2 quality in millionths, 3 comment
local owner = redis.call('HGET', KEYS[1], 'tenant')
if not owner then return -1 end
if owner ~= ARGV[1] then return -2 end
local q = tonumber(ARGV[2])
local old = redis.call('HGET', KEYS[1], 'q')
local rk, pre = KEYS[2], redis.call('HGET', KEYS[1], 'pre') or '-|-|-|na||'
if old then
  redis.call('HINCRBY', rk, pre .. 'qsum', q - tonumber(old))
else
  redis.call('HINCRBY', rk, pre .. 'qsum', q)
  redis.call('HINCRBY', rk, pre .. 'qn', 1)
  redis.call('HINCRBY', rk, pre .. 'qcost', tonumber(redis.call('HGET', KEYS[1], 'cost') or '0'))
end
redis.call('HSET', KEYS[1], 'q', q, 'comment', ARGV[3])
return 1
