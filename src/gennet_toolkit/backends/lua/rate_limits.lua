-- Several limits of one key, checked in one atomic call: the cost is spent on every limit
-- only if every limit allows it, otherwise nothing is written at all.
-- KEYS[i]  limit i's state; all keys share one {hash tag}, so one Redis Cluster slot
-- ARGV[1]  algorithm: 'fw' (fixed window), 'sw' (sliding window counter) or 'gcra'
-- ARGV[2]  cost; then ARGV[1 + 2i] limit i's count and ARGV[2 + 2i] its period in ms
-- Returns one {allowed, remaining, reset_after_ms, retry_after_ms} per limit (times as
-- strings). When another limit refused, an allowing one reports what it still has.
-- Time comes from the Redis server (TIME), never from the clients' clocks.
local algorithm, cost = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local n = #KEYS
local state, refused = {}, false

-- Phase 1: read every limit's state and decide.
for i = 1, n do
  local key = KEYS[i]
  local limit, period = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local s = {limit = limit, period = period}
  if algorithm == 'fw' then
    -- The first hit starts the window; its end is the key's expiry.
    s.count = tonumber(redis.call('GET', key) or '0')
    local ttl = redis.call('PTTL', key)
    s.start = ttl < 0
    s.left = s.start and period or ttl
    s.ok = s.count + cost <= limit
  elseif algorithm == 'sw' then
    -- The previous window's count weighted by its overlap with the sliding window.
    local window = math.floor(now / period)
    s.window, s.elapsed = window, now - window * period
    local stored = redis.call('HMGET', key, 'w', 'c', 'p')
    local w = tonumber(stored[1])
    s.cur, s.prev = 0, 0
    if w == window then
      s.cur, s.prev = tonumber(stored[2]), tonumber(stored[3])
    elseif w == window - 1 then
      s.prev = tonumber(stored[2])
    end
    s.estimate = s.prev * (1 - s.elapsed / period) + s.cur
    s.ok = s.estimate + cost <= limit + 1e-9
  else
    -- GCRA: the key holds the theoretical arrival time (TAT) in ms.
    s.interval = period / limit
    s.tat = math.max(tonumber(redis.call('GET', key) or '0'), now)
    s.allow_at = s.tat + cost * s.interval - period
    s.ok = s.allow_at - now <= 1e-6
  end
  state[i] = s
  if not s.ok then refused = true end
end

local spend = cost
if refused then spend = 0 end

local function sliding_reset(s, cur)
  if cur > 0 then return 2 * s.period - s.elapsed end
  if s.prev > 0 then return s.period - s.elapsed end
  return 0
end

-- Phase 2: write (only when every limit allowed) and report.
local out = {}
for i = 1, n do
  local key, s = KEYS[i], state[i]
  local limit, period = s.limit, s.period
  if algorithm == 'fw' then
    if not s.ok then
      out[i] = {0, limit - s.count, tostring(s.left), tostring(s.left)}
    else
      if spend > 0 then
        if s.start then
          redis.call('SET', key, s.count + spend, 'PX', math.ceil(period))
        else
          redis.call('INCRBY', key, spend)
        end
      end
      out[i] = {1, limit - s.count - spend, tostring(s.left), '0'}
    end
  elseif algorithm == 'sw' then
    if not s.ok then
      local retry
      if s.cur + cost <= limit then
        retry = (1 - (limit - s.cur - cost) / s.prev) * period - s.elapsed
      else
        retry = (period - s.elapsed) + math.max(0, 1 - (limit - cost) / s.cur) * period
      end
      local remaining = math.max(0, math.floor(limit - s.estimate + 1e-9))
      out[i] = {0, remaining, tostring(sliding_reset(s, s.cur)), tostring(retry)}
    else
      local cur = s.cur + spend
      if spend > 0 then
        redis.call('HSET', key, 'w', s.window, 'c', cur, 'p', s.prev)
        -- Kept until the next window ends: it is that window's "previous".
        redis.call('PEXPIRE', key, math.ceil(2 * period - s.elapsed))
      end
      local remaining = math.max(0, math.floor(limit - s.estimate - spend + 1e-9))
      out[i] = {1, remaining, tostring(sliding_reset(s, cur)), '0'}
    end
  else
    if not s.ok then
      local remaining = math.floor((period - (s.tat - now)) / s.interval + 1e-6)
      out[i] = {0, remaining, tostring(s.tat - now), tostring(s.allow_at - now)}
    else
      local new_tat = s.tat + spend * s.interval
      if spend > 0 then
        redis.call('SET', key, string.format('%.3f', new_tat), 'PX',
          math.max(1, math.ceil(new_tat - now)))
      end
      local remaining = math.floor((period - (new_tat - now)) / s.interval + 1e-6)
      out[i] = {1, remaining, tostring(new_tat - now), '0'}
    end
  end
end
return out
