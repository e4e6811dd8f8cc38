-- Several limits of one key, checked in one atomic call: the cost is spent on every limit
-- only if every limit allows it, otherwise nothing is written at all.
-- KEYS[i]  limit i's state; all keys share one {hash tag}, so one Redis Cluster slot
-- ARGV[1]  algorithm: 'fw' (fixed window), 'sw' (sliding window counter) or 'gcra'
-- ARGV[2]  cost; then ARGV[1 + 2i] limit i's count and ARGV[2 + 2i] its period in ms
-- Returns one {allowed, remaining, reset_after_ms, retry_after_ms} per limit (times as
-- strings). When another limit refused, an allowing one reports what it still has.
-- Each algorithm reads every limit first (flat arrays: no table per limit), then writes
-- only if none refused. The same arithmetic as fixed_window.lua, sliding_window.lua and
-- gcra.lua, and as the memory backend.
local algorithm, cost = ARGV[1], tonumber(ARGV[2])
local n = #KEYS
local limits, periods = {}, {}
for i = 1, n do
  limits[i], periods[i] = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
end
local out, refused = {}, false

if algorithm == 'fw' then
  -- The first hit starts a window; its end is the key's expiry (server-side time).
  local counts, ttls = {}, {}
  for i = 1, n do
    counts[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
    ttls[i] = redis.call('PTTL', KEYS[i])  -- < 0: no window yet
    if counts[i] + cost > limits[i] then refused = true end
  end
  local spend = refused and 0 or cost
  for i = 1, n do
    local limit, count, ttl = limits[i], counts[i], ttls[i]
    local left = ttl >= 0 and ttl or periods[i]
    if count + cost > limit then
      out[i] = {0, limit - count, tostring(left), tostring(left)}
    else
      if spend > 0 then
        if ttl >= 0 then
          redis.call('INCRBY', KEYS[i], spend)
        else
          redis.call('SET', KEYS[i], count + spend, 'PX', math.ceil(periods[i]))
        end
      end
      out[i] = {1, limit - count - spend, tostring(left), '0'}
    end
  end
  return out
end

-- Time comes from the Redis server (TIME), never from the clients' clocks.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000

if algorithm == 'sw' then
  -- The previous window's count weighted by its overlap with the sliding window, plus
  -- the current one. One hash per limit {w = window number, c = current, p = previous}.
  local eps = 1e-9
  local windows, elapseds, curs, prevs, estimates = {}, {}, {}, {}, {}
  for i = 1, n do
    local period = periods[i]
    local window = math.floor(now / period)
    local elapsed = now - window * period
    local stored = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
    local w, cur, prev = tonumber(stored[1]), 0, 0
    if w == window then
      cur, prev = tonumber(stored[2]), tonumber(stored[3])
    elseif w == window - 1 then
      prev = tonumber(stored[2])
    end
    local estimate = prev * (1 - elapsed / period) + cur
    windows[i], elapseds[i], curs[i], prevs[i], estimates[i] = window, elapsed, cur, prev, estimate
    if estimate + cost > limits[i] + eps then refused = true end
  end
  local spend = refused and 0 or cost
  for i = 1, n do
    local limit, period, elapsed = limits[i], periods[i], elapseds[i]
    local cur, prev, estimate = curs[i], prevs[i], estimates[i]
    local allowed = estimate + cost <= limit + eps
    local retry, remaining = 0, 0
    if allowed then
      cur = cur + spend
      remaining = math.max(0, math.floor(limit - estimate - spend + eps))
      if spend > 0 then
        redis.call('HSET', KEYS[i], 'w', windows[i], 'c', cur, 'p', prev)
        -- Kept until the next window ends: it is that window's "previous".
        redis.call('PEXPIRE', KEYS[i], math.ceil(2 * period - elapsed))
      end
    else
      if cur + cost <= limit then
        retry = (1 - (limit - cur - cost) / prev) * period - elapsed
      else
        retry = (period - elapsed) + math.max(0, 1 - (limit - cost) / cur) * period
      end
      remaining = math.max(0, math.floor(limit - estimate + eps))
    end
    local reset = 0
    if cur > 0 then
      reset = 2 * period - elapsed
    elseif prev > 0 then
      reset = period - elapsed
    end
    out[i] = {allowed and 1 or 0, remaining, tostring(reset), tostring(retry)}
  end
  return out
end

-- GCRA: a token bucket of limit tokens refilled over the period; each key holds the
-- theoretical arrival time (TAT) in ms.
local eps = 1e-6
local tats, intervals = {}, {}
for i = 1, n do
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  tats[i], intervals[i] = tat, periods[i] / limits[i]
  if tat + cost * intervals[i] - periods[i] - now > eps then refused = true end
end
local spend = refused and 0 or cost
for i = 1, n do
  local limit, period, tat, interval = limits[i], periods[i], tats[i], intervals[i]
  local allow_at = tat + cost * interval - period
  if allow_at - now > eps then
    local remaining = math.floor((period - (tat - now)) / interval + eps)
    out[i] = {0, remaining, tostring(tat - now), tostring(allow_at - now)}
  else
    local new_tat = tat + spend * interval
    if spend > 0 then
      redis.call('SET', KEYS[i], string.format('%.3f', new_tat), 'PX',
        math.max(1, math.ceil(new_tat - now)))
    end
    local remaining = math.floor((period - (new_tat - now)) / interval + eps)
    out[i] = {1, remaining, tostring(new_tat - now), '0'}
  end
end
return out
