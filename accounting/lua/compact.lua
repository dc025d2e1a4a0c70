-- Commit one compacted batch: the batch's Parquet files are durable, so drop its entries from the
-- stream and move the watermark, in one step. Only the batch recorded as pending may commit.
-- KEYS: 1 ledger stream, 2 the tenant's ledger:cold hash.  ARGV: 1 first id, 2 last id, 3 rows.
if redis.call('HGET', KEYS[2], 'pending') ~= ARGV[1] .. '|' .. ARGV[2] then return -1 end
-- Ids after last: MINID keeps them. Every id at or before last is in the files or was compacted earlier.
local ms, seq = string.match(ARGV[2], '^(%d+)-(%d+)$')
local removed = redis.call('XTRIM', KEYS[1], 'MINID', ms .. '-' .. string.format('%d', tonumber(seq) + 1))
redis.call('HSET', KEYS[2], 'wm', ARGV[2])
redis.call('HDEL', KEYS[2], 'pending')
redis.call('HINCRBY', KEYS[2], 'rows', tonumber(ARGV[3]))
return removed
