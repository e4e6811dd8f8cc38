-- Reset the lock's TTL only if the caller's token still owns it.
-- KEYS[1] lock; ARGV[1] owner token; ARGV[2] ttl in ms
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
