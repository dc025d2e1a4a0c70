-- Count one workflow step: which of its message blocks earlier steps already sent (redundant context),
-- then remember its blocks and add the step to the workflow's totals. Atomic, so concurrent steps of one
-- workflow each see the blocks of the steps before them exactly once.
--
-- KEYS: 1 workflow hash, 2 block set, 3 the tenant's workflow index (zset)
-- ARGV: 1 workflow id, 2 workflow key hash, 3 now (unix s), 4 ttl s, 5 tier, 6 cost nano-USD,
--       7 prompt tokens, 8 cached tokens, 9 input rate (nano-USD per token), 10 step name,
--       then pairs: block hash, block tokens
-- Returns {step number, redundant tokens, redundant nano-USD}
local wf, blocks, index = KEYS[1], KEYS[2], KEYS[3]
local rate = tonumber(ARGV[9])
local redundant = 0
for i = 11, #ARGV, 2 do
  if redis.call('SISMEMBER', blocks, ARGV[i]) == 1 then
    redundant = redundant + tonumber(ARGV[i + 1])
  end
end
for i = 11, #ARGV, 2 do
  redis.call('SADD', blocks, ARGV[i])
end
local step = redis.call('HINCRBY', wf, 'steps', 1)
local red_nusd = math.floor(redundant * rate + 0.5)
redis.call('HSETNX', wf, 'id', ARGV[1])
redis.call('HSETNX', wf, 'first_ts', ARGV[3])
redis.call('HSET', wf, 'last_ts', ARGV[3])
redis.call('HINCRBY', wf, 'cost_nusd', tonumber(ARGV[6]))
redis.call('HINCRBY', wf, 'prompt_tokens', tonumber(ARGV[7]))
redis.call('HINCRBY', wf, 'cached_tokens', tonumber(ARGV[8]))
redis.call('HINCRBY', wf, 'redundant_tokens', redundant)
redis.call('HINCRBY', wf, 'redundant_nusd', red_nusd)
redis.call('HINCRBY', wf, 'tier:' .. ARGV[5], 1)
redis.call('HINCRBY', wf, 'depth:' .. step, tonumber(ARGV[6]))
if ARGV[10] ~= '' then redis.call('HINCRBY', wf, 'step:' .. ARGV[10], 1) end
local ttl = tonumber(ARGV[4])
redis.call('EXPIRE', wf, ttl)
redis.call('EXPIRE', blocks, ttl)
redis.call('ZADD', index, tonumber(ARGV[3]), ARGV[2])
redis.call('EXPIRE', index, ttl)
return {step, redundant, red_nusd}
