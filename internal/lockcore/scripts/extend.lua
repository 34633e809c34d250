-- Reset the expiry of the token on every resource to ARGV[2] ms from now,
-- if it still holds them all; otherwise change nothing.
-- KEYS: five per resource (see lib.lua). ARGV[1]: token, ARGV[2]: TTL in
-- ms.
-- Returns 0 on success, or the index of the first resource not held.
local n = #KEYS / 5
local token, ttl = ARGV[1], tonumber(ARGV[2])
local now_ms = clock()
for i = 1, n do
  local s = redis.call('ZSCORE', KEYS[5*i-4], token)
  if not s or tonumber(s) <= now_ms then
    return i
  end
end
local exp = fmt(now_ms + ttl)
for i = 1, n do
  local b = 5 * (i - 1)
  redis.call('ZADD', KEYS[b+1], 'XX', exp, token)
  keep(b+1, ttl)
  keep(b+2, ttl)
end
return 0
