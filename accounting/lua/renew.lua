-- Extend the lease of a live request's holds, so a long debate or stream never outlives its hold.
-- KEYS: holds zsets of the held scopes. ARGV: 1 hold member, 2 lease ttl ms.
-- Only members still present are renewed (XX): a hold already settled or expired stays gone.
redis.replicate_commands()
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = 0
for i = 1, #KEYS do
  n = n + redis.call('ZADD', KEYS[i], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
end
return n
