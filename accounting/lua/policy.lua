-- Set (ARGV[1]='set') or delete (ARGV[1]='del') one budget policy and bump its tenant's policy
-- version in the same step, so an admission sees either the old policy or the new one, never none.
-- KEYS: 1 policy hash, 2 tenant's policy index (set), 3 tenant's policy version.
-- ARGV: 1 op, 2 scope, then for 'set': limit, period, mode, soft_pct.
local existed = redis.call('DEL', KEYS[1])
if ARGV[1] == 'set' then
  redis.call('HSET', KEYS[1], 'limit', ARGV[3], 'period', ARGV[4], 'mode', ARGV[5], 'soft_pct', ARGV[6])
  redis.call('SADD', KEYS[2], ARGV[2])
else
  redis.call('SREM', KEYS[2], ARGV[2])
end
redis.call('INCR', KEYS[3])
return existed
