-- Reset the TTL of every key in KEYS to ARGV[2] milliseconds if all of them
-- still hold ARGV[1] ("<token>:<fence>"); otherwise change nothing.
-- Returns 0 on success, or the index of the first key not held.
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) ~= ARGV[1] then
    return i
  end
end
for i = 1, #KEYS do
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
return 0
