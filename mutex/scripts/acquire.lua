-- Acquire every lock key in KEYS, or none of them.
-- ARGV[1]: owner token, ARGV[2]: TTL in milliseconds.
-- Returns {1, fence} when granted, {0, index, pttl} when KEYS[index] is held.
-- The fence is the server's TIME in microseconds; the value stored under
-- each key is "<token>:<fence>", which is what release and extend compare.
if #KEYS == 1 then
  local t = redis.call('TIME')
  local fence = t[1] .. string.format('%06d', tonumber(t[2]))
  if redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'NX', 'PX', ARGV[2]) then
    return {1, fence}
  end
  return {0, 1, redis.call('PTTL', KEYS[1])}
end
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {0, i, redis.call('PTTL', KEYS[i])}
  end
end
local t = redis.call('TIME')
local fence = t[1] .. string.format('%06d', tonumber(t[2]))
local value = ARGV[1] .. ':' .. fence
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], value, 'PX', ARGV[2])
end
return {1, fence}
