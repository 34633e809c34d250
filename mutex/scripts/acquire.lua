-- Acquire every lock key in KEYS[1..n], or none of them; KEYS[n+1] is the
-- revocation marker of the request's token.
-- ARGV[1]: owner token, ARGV[2]: TTL in milliseconds, ARGV[3]: "1" on the
-- request's first send, "2" on a re-send.
-- Returns {1, fence} when granted, {0, index, pttl} when KEYS[index] is held,
-- and {0, 1, -3} when the token was revoked (its requester gave up on it).
-- The fence is the server's TIME in microseconds; the value stored under
-- each key is "<token>:<fence>", which is what release and extend compare.
-- One EXISTS over every key and the marker finds the common case, nothing
-- there, at once; otherwise PTTL (-2 for a missing key) finds the held key.
local n = #KEYS - 1
if redis.call('EXISTS', unpack(KEYS)) == 0 then
  local fence = now()
  local value = ARGV[1] .. ':' .. fence
  for i = 1, n do
    redis.call('SET', KEYS[i], value, 'PX', ARGV[2])
  end
  return {1, fence}
end
for i = 1, n do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl ~= -2 then
    -- A re-sent request (go-redis retries after a lost reply) finds its
    -- own grant: that is the grant.
    local fence = i == 1 and ARGV[3] ~= '1' and owned(redis.call('GET', KEYS[1]), ARGV[1])
    if fence then
      return {1, fence}
    end
    return {0, i, pttl}
  end
end
if redis.call('EXISTS', KEYS[n + 1]) == 1 then
  return {0, 1, -3}
end
local fence = now()
local value = ARGV[1] .. ':' .. fence
for i = 1, n do
  redis.call('SET', KEYS[i], value, 'PX', ARGV[2])
end
return {1, fence}
