-- Sliding window counter: the previous window's count, weighted by how much of it still
-- overlaps the sliding window, plus the current one. O(1): one hash per key.
-- KEYS[1] hash {w = window number, c = current count, p = previous count}
-- ARGV[1] limit; ARGV[2] period in ms; ARGV[3] cost
-- Time comes from the Redis server (TIME), never from the clients' clocks.
local limit, period, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local eps = 1e-9
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local window = math.floor(now / period)
local elapsed = now - window * period
local stored = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local cur, prev = 0, 0
local w = tonumber(stored[1])
if w == window then
  cur, prev = tonumber(stored[2]), tonumber(stored[3])
elseif w == window - 1 then
  prev = tonumber(stored[2])
end
local function reset(c)
  if c > 0 then return 2 * period - elapsed end
  if prev > 0 then return period - elapsed end
  return 0
end
local estimate = prev * (1 - elapsed / period) + cur
if estimate + cost > limit + eps then
  local retry
  if cur + cost <= limit then
    retry = (1 - (limit - cur - cost) / prev) * period - elapsed
  else
    retry = (period - elapsed) + math.max(0, 1 - (limit - cost) / cur) * period
  end
  local remaining = math.max(0, math.floor(limit - estimate + eps))
  return {0, remaining, tostring(reset(cur)), tostring(retry)}
end
if cost > 0 then
  cur = cur + cost
  redis.call('HSET', KEYS[1], 'w', window, 'c', cur, 'p', prev)
  -- Kept until the next window ends: it is that window's "previous".
  redis.call('PEXPIRE', KEYS[1], math.ceil(2 * period - elapsed))
end
local remaining = math.max(0, math.floor(limit - estimate - cost + eps))
return {1, remaining, tostring(reset(cur)), '0'}
