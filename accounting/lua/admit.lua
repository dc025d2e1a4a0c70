-- Reserve the first plan whose estimate fits every applicable budget scope.
-- Atomic: Redis runs scripts one at a time, so concurrent admits across any
-- number of proxy processes see each other's holds; nobody can slip in between
-- the check and the reservation.
--
-- The caller sends only the scopes that have a policy, per its cached view of the
-- policy index; KEYS[1] holds the index's version and a mismatch returns {-1}
-- so the caller refreshes and retries. A policy set a moment ago is therefore
-- enforced from the very next admission, not after some cache TTL.
--
-- KEYS: 1 policy-index version, then per scope i (1-based):
--       [3i-1]=budget policy hash, [3i]=spend hash, [3i+1]=holds zset
-- ARGV: 1 member prefix (request id), 2 day, 3 month, 4 lease ttl ms, 5 nscopes, 6 nplans,
--       7 expected policy-index version, then per plan: estimate (nano-USD), count, scope indices...
-- Returns {1, plan_idx, remaining|-1, held_csv, warnings...}
--   or {0, scope_idx, spent, held, limit, plan_idx, retryable} for a refusal: spent is settled money,
--      held is what requests in flight have reserved; retryable is 1 when some plan would fit on spent
--      money alone, i.e. the refusal is caused only by holds that will settle (usually for less)
--   or {-1} when the caller's view of the policy index is stale.
redis.replicate_commands()
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[7] then return {-1} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rid, day, month = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ARGV[4])
local nscopes, nplans = tonumber(ARGV[5]), tonumber(ARGV[6])

local state = {}
for i = 1, nscopes do
  local pol = redis.call('HMGET', KEYS[3*i-1], 'limit', 'period', 'mode', 'soft_pct')
  if pol[1] then
    local sk, hk = KEYS[3*i], KEYS[3*i+1]
    -- Leases whose worker died expire here: give their hold back to the scope.
    local expired = redis.call('ZRANGEBYSCORE', hk, '-inf', now, 'LIMIT', 0, 512)
    if #expired > 0 then
      local sum = 0
      for _, m in ipairs(expired) do
        sum = sum + tonumber(string.match(m, '|(%d+)$'))
        redis.call('ZREM', hk, m)
      end
      redis.call('HINCRBY', sk, 'reserved', -sum)
    end
    local field = 't'
    if pol[2] == 'day' then field = 'd:' .. day elseif pol[2] == 'month' then field = 'm:' .. month end
    local v = redis.call('HMGET', sk, field, 'reserved')
    local spent, held = tonumber(v[1] or '0'), math.max(0, tonumber(v[2] or '0'))
    state[i] = {
      limit = tonumber(pol[1]), used = spent + held, spent = spent, held = held,
      hard = pol[3] ~= 'soft', soft = tonumber(pol[4] or ''),
    }
  end
end

local pos = 8
local best = nil -- blocker of the cheapest refused plan, for the error message
local retryable = 0
for p = 1, nplans do
  local est = tonumber(ARGV[pos])
  local cnt = tonumber(ARGV[pos + 1])
  local idx = {}
  for j = 1, cnt do idx[j] = tonumber(ARGV[pos + 1 + j]) end
  pos = pos + 2 + cnt
  local blocker = nil
  local fits_spent = true
  for _, i in ipairs(idx) do
    local s = state[i]
    if s and s.hard then
      if s.used + est > s.limit and blocker == nil then blocker = i end
      if s.spent + est > s.limit then fits_spent = false end
    end
  end
  if blocker ~= nil and fits_spent then retryable = 1 end
  if blocker == nil then
    local remaining = -1
    local held = {}
    local warnings = {}
    local member = rid .. '|' .. string.format('%d', est)
    for _, i in ipairs(idx) do
      local s = state[i]
      if s then
        if redis.call('ZADD', KEYS[3*i+1], now + ttl, member) == 1 then
          redis.call('HINCRBY', KEYS[3*i], 'reserved', est)
        end
        held[#held + 1] = tostring(i)
        local after = s.used + est
        if s.hard then
          local r = s.limit - after
          if remaining < 0 or r < remaining then remaining = r end
        elseif after > s.limit then
          warnings[#warnings + 1] = i .. ':' .. string.format('%d', after)
        end
        if s.soft and s.limit > 0 and after * 100 >= s.limit * s.soft then
          warnings[#warnings + 1] = i .. ':' .. string.format('%d', after)
        end
      end
    end
    local out = {1, p - 1, remaining, table.concat(held, ',')}
    for _, w in ipairs(warnings) do out[#out + 1] = w end
    return out
  end
  if best == nil or est < best[5] then
    local s = state[blocker]
    best = {blocker, s.spent, s.held, s.limit, est, p - 1}
  end
end
return {0, best[1], best[2], best[3], best[4], best[6], retryable}
