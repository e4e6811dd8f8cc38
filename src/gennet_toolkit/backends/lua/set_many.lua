-- Store every KEYS[i] = ARGV[i + 1] in one atomic step, each with the same TTL.
-- ARGV[1] ttl in ms ('0': no expiry)
for i, key in ipairs(KEYS) do
  if ARGV[1] ~= '0' then
    redis.call('SET', key, ARGV[i + 1], 'PX', ARGV[1])
  else
    redis.call('SET', key, ARGV[i + 1])
  end
end
return #KEYS
