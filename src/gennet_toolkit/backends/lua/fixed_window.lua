-- Fixed window counter: the first hit starts a window of ARGV[2] ms (server-side expiry).
-- KEYS[1] counter; ARGV[1] limit; ARGV[2] period in ms; ARGV[3] cost
-- Returns {allowed, remaining, reset_after_ms, retry_after_ms} (times as strings).
local limit, period, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local count = tonumber(redis.call('GET', KEYS[1]) or '0')
local ttl = redis.call('PTTL', KEYS[1])
local started = ttl >= 0
if not started then ttl = period end
if count + cost > limit then
  return {0, limit - count, tostring(ttl), tostring(ttl)}
end
if cost > 0 then
  if started then
    redis.call('INCRBY', KEYS[1], cost)
  else
    redis.call('SET', KEYS[1], count + cost, 'PX', math.ceil(period))
  end
end
return {1, limit - count - cost, tostring(ttl), '0'}
