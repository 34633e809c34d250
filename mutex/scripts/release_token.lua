-- Release the lock keys in KEYS whose value starts with ARGV[1] .. ':', for an
-- acquire whose reply was lost (its fence is unknown).
local prefix = ARGV[1] .. ':'
local n = 0
for i = 1, #KEYS do
  local v = redis.call('GET', KEYS[i])
  if v and string.sub(v, 1, #prefix) == prefix then
    redis.call('DEL', KEYS[i])
    redis.call('PUBLISH', KEYS[i], '')
    n = n + 1
  end
end
return n
