-- GCRA (token bucket of ARGV[1] tokens refilled over ARGV[2] ms) on one key holding the
-- theoretical arrival time (TAT) in ms. Time comes from the Redis server (TIME).
-- KEYS[1] tat; ARGV[1] limit; ARGV[2] period in ms; ARGV[3] cost
local limit, period, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local eps = 1e-6
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local interval = period / limit
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + cost * interval
local allow_at = new_tat - period
if allow_at - now > eps then
  local remaining = math.floor((period - (tat - now)) / interval + eps)
  return {0, remaining, tostring(tat - now), tostring(allow_at - now)}
end
if cost > 0 then
  redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', math.max(1, math.ceil(new_tat - now)))
end
local remaining = math.floor((period - (new_tat - now)) / interval + eps)
return {1, remaining, tostring(new_tat - now), '0'}
