-- Atomic increment; the TTL applies when the key is created (or has none), never extended.
-- KEYS[1] counter; ARGV[1] amount; ARGV[2] ttl in ms (> 0)
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return value
