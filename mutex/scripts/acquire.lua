-- Acquire every lock key in KEYS, or none of them.
-- ARGV[1]: owner token, ARGV[2]: TTL in milliseconds.
-- Returns {1, fence} when granted, {0, index, pttl} when KEYS[index] is held.
-- The fence is the server's TIME in microseconds; the value stored under
-- each key is "<token>:<fence>", which is what release and extend compare.
-- PTTL answers -2 for a missing key, so a held key costs one lookup.
for i = 1, #KEYS do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl ~= -2 then
    return {0, i, pttl}
  end
end
local fence = now()
local value = ARGV[1] .. ':' .. fence
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], value, 'PX', ARGV[2])
end
return {1, fence}
