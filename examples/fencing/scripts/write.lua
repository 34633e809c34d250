-- Store a value and its fence in the hash KEYS[1], unless the hash holds a
-- higher fence. ARGV[1] is the value, ARGV[2] the fence as a decimal integer
-- without sign or leading zeros.
-- Returns {1, fence} when the value was stored, {0, stored fence} when the
-- fence was lower than the stored one and nothing changed.

-- Fences are compared as decimal strings, not as Lua numbers: Lua numbers
-- are doubles, exact only up to 2^53, and a fence may be any positive int64.
local function less(a, b)
  if #a ~= #b then
    return #a < #b
  end
  return a < b
end

local stored = redis.call('HGET', KEYS[1], 'fence')
if stored and less(ARGV[2], stored) then
  return {0, stored}
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'fence', ARGV[2])
return {1, ARGV[2]}
