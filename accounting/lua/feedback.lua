-- Rate a request: set its quality and move the rollup sums, re-rating replaces the old score.
-- KEYS: 1 request index hash, 2 that request's rollup hash.
-- ARGV: 1 tenant (must own the record), 2 quality in millionths, 3 comment, 4 rollup prefix, 5 complexity prefix
local owner = redis.call('HGET', KEYS[1], 'tenant')
if not owner then return -1 end
if owner ~= ARGV[1] then return -2 end
local q = tonumber(ARGV[2])
local old = redis.call('HGET', KEYS[1], 'q')
local rk, pre, cx = KEYS[2], ARGV[4], ARGV[5]
if old then
  local d = q - tonumber(old)
  redis.call('HINCRBY', rk, pre .. 'qsum', d)
  redis.call('HINCRBY', rk, cx .. 'qsum', d)
else
  redis.call('HINCRBY', rk, pre .. 'qsum', q)
  redis.call('HINCRBY', rk, pre .. 'qn', 1)
  redis.call('HINCRBY', rk, cx .. 'qsum', q)
  redis.call('HINCRBY', rk, cx .. 'qn', 1)
  redis.call('HINCRBY', rk, pre .. 'qcost', tonumber(redis.call('HGET', KEYS[1], 'cost') or '0'))
  redis.call('HINCRBY', rk, cx .. 'qcost', tonumber(redis.call('HGET', KEYS[1], 'cost') or '0'))
end
redis.call('HSET', KEYS[1], 'q', q, 'comment', ARGV[3])
return 1
