-- Give a hold back without charging anything (the upstream call never happened).
-- KEYS: (spend, holds) pairs. ARGV: 1 hold member, 2 held nano-USD.
local n = 0
for i = 1, #KEYS, 2 do
  if redis.call('ZREM', KEYS[i + 1], ARGV[1]) == 1 then
    redis.call('HINCRBY', KEYS[i], 'reserved', -tonumber(ARGV[2]))
    n = n + 1
  end
end
return n
