-- Reconcile one reservation with what the call really used (one atomic step).
--
-- KEYS: the token window counters the reservation charged (nw of them),
--       then a (period hash, reservation zset) pair per budget (nb pairs).
-- ARGV: rid, nw, nb, then per window: token delta (actual - estimated) and
--       the counter's TTL (ms); then per budget: actual cost and EXPIREAT of
--       the period's keys (unix s).
--
-- Token deltas go to the window the reservation was made in: an overrun is
-- added (creating the counter if needed), a refund is taken back from a
-- counter that still exists, never below zero. A budget's reservation
-- is released if it is still held (it may have been reaped) and the actual
-- cost is added to spent, so settling after a reap still charges the spend.
-- With rid = '' nothing is released: a plain charge (spend recorded while
-- Redis was down, replayed later).

local rid = ARGV[1]
local nw, nb = tonumber(ARGV[2]), tonumber(ARGV[3])
for i = 1, nw do
  local delta, ttl = tonumber(ARGV[2 + 2 * i]), tonumber(ARGV[3 + 2 * i])
  local k = KEYS[i]
  if delta > 0 then
    redis.call('INCRBY', k, delta)
    redis.call('PEXPIRE', k, ttl)
  elseif delta < 0 and redis.call('EXISTS', k) == 1 then
    if redis.call('INCRBY', k, delta) < 0 then redis.call('SET', k, 0, 'KEEPTTL') end
  end
end
for j = 1, nb do
  local h, z = KEYS[nw + 2 * j - 1], KEYS[nw + 2 * j]
  local o = 3 + 2 * nw + (j - 1) * 2
  local actual, expire_at = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2])
  if rid ~= '' then
    local amt = redis.call('HGET', h, 'r:' .. rid)
    if amt then
      redis.call('HDEL', h, 'r:' .. rid)
      if redis.call('HINCRBY', h, 'reserved', -tonumber(amt)) < 0 then redis.call('HSET', h, 'reserved', 0) end
    end
    redis.call('ZREM', z, rid)
  end
  if actual > 0 then
    redis.call('HINCRBY', h, 'spent', actual)
    redis.call('EXPIREAT', h, expire_at)
  end
end
return 1
