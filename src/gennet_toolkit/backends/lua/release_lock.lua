-- Delete the lock only if the caller's token still owns it.
-- KEYS[1] lock; ARGV[1] owner token
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
