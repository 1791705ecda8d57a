-- Check every limit of one call and, only if all pass, reserve (one atomic step).
--
-- KEYS: two per check.
--   window check ('w'): counter of the current window, counter of the previous window
--   budget check ('b'): period hash {spent, reserved, r:<rid> = amount}, zset rid -> deadline
-- ARGV: now_ms, rid, reservation_deadline_ms, n, then five per check:
--   kind, limit, amount, a, b
--   window: a = window length (ms), b = start of the current window (ms)
--   budget: a = EXPIREAT of the period's keys (unix s), b = end of the period (ms)
--
-- Windows are fixed windows smoothed into a sliding estimate:
--   used = previous * (time left in the current window / window) + current
-- A budget refuses when spent + reserved + amount > limit; reservations of
-- calls that never settled are reaped once their deadline passes.
--
-- Returns {admitted (1|0), refusing check (1-based, 0 if none), retry_ms,
--          used_1, reset_ms_1, used_2, reset_ms_2, ...}; used is after the
-- reservation when admitted, reset_ms the time until it is back to zero.

local now = tonumber(ARGV[1])
local rid = ARGV[2]
local deadline = tonumber(ARGV[3])
local n = tonumber(ARGV[4])
local used, reset = {}, {}
local fail_idx, fail_wait = 0, 0

for i = 1, n do
  local o = 4 + (i - 1) * 5
  local kind, limit, amount = ARGV[o + 1], tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  local a, b = tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5])
  local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
  local wait = 0
  if kind == 'w' then
    local elapsed = now - b
    local cur = tonumber(redis.call('GET', k1) or '0')
    local prev = tonumber(redis.call('GET', k2) or '0')
    local est = prev * (a - elapsed) / a + cur
    used[i] = est
    if cur > 0 then reset[i] = 2 * a - elapsed elseif prev > 0 then reset[i] = a - elapsed else reset[i] = 0 end
    if est + amount > limit then
      if cur + amount <= limit then
        -- wait for the previous window's weight to decay enough (prev > 0 here)
        wait = a - elapsed - (limit - cur - amount) * a / prev
      else
        -- wait for the next window, where the current count becomes the decaying one
        wait = a - elapsed
        if cur > 0 then wait = wait + math.max(0, a - (limit - amount) * a / cur) end
      end
      wait = math.max(wait, 1)
    end
  else
    local stale = redis.call('ZRANGEBYSCORE', k2, '-inf', now, 'LIMIT', 0, 100)
    for _, r in ipairs(stale) do
      local amt = redis.call('HGET', k1, 'r:' .. r)
      if amt then
        redis.call('HINCRBY', k1, 'reserved', -tonumber(amt))
        redis.call('HDEL', k1, 'r:' .. r)
      end
      redis.call('ZREM', k2, r)
    end
    local spent = tonumber(redis.call('HGET', k1, 'spent') or '0')
    local reserved = tonumber(redis.call('HGET', k1, 'reserved') or '0')
    used[i] = spent + reserved
    reset[i] = b - now
    if spent + reserved + amount > limit then
      if spent + amount <= limit then
        wait = 1000  -- only in-flight reservations block: they settle soon
      else
        wait = math.max(b - now, 1)  -- spent: wait for the next period
      end
    end
  end
  if wait > fail_wait then fail_idx, fail_wait = i, wait end
end

local out = {0, fail_idx, math.ceil(fail_wait)}
if fail_idx == 0 then
  out[1] = 1
  for i = 1, n do
    local o = 4 + (i - 1) * 5
    local kind, amount = ARGV[o + 1], tonumber(ARGV[o + 3])
    local a, b = tonumber(ARGV[o + 4]), tonumber(ARGV[o + 5])
    local k1, k2 = KEYS[2 * i - 1], KEYS[2 * i]
    if amount > 0 then
      if kind == 'w' then
        redis.call('INCRBY', k1, amount)
        redis.call('PEXPIRE', k1, 2 * a + 1000)
        reset[i] = 2 * a - (now - b)
      else
        redis.call('HINCRBY', k1, 'reserved', amount)
        redis.call('HSET', k1, 'r:' .. rid, amount)
        redis.call('ZADD', k2, deadline, rid)
        redis.call('EXPIREAT', k1, a)
        redis.call('EXPIREAT', k2, a)
      end
      used[i] = used[i] + amount
    end
  end
end
for i = 1, n do
  out[#out + 1] = math.floor(used[i])
  out[#out + 1] = math.ceil(reset[i])
end
return out
