-- Take every resource if the token may; otherwise, unless ARGV[5] is "1"
-- (only try), queue the token for each of them.
-- KEYS: five per resource (see lib.lua), then the token's revocation
-- marker.
-- ARGV[1]: token, ARGV[2]: mode, ARGV[3]: TTL in ms, ARGV[4]: liveness of
-- a queue entry in ms, ARGV[5]: "1" to only try.
-- Returns {1, fence, free...} when granted; {0, index, retry} when
-- resource index is in the way, retry being the ms until its first holder
-- expires if holders are in the way, else -2; {-3} when the token was
-- revoked (its requester gave up on it).
local n = (#KEYS - 1) / 5
local token, mode = ARGV[1], ARGV[2]
local ttl, live = tonumber(ARGV[3]), tonumber(ARGV[4])
local now_ms, now_us = clock()
-- A re-sent request finds its own grant or its queue entry.
local again = regrant(n, token, mode, now_ms)
if again then
  return again
end
if redis.call('ZSCORE', KEYS[3], token) then
  return {0, 1, -2}
end
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  return {-3}
end
local k = kind(token)
local blocked, why = 0, nil
for i = 1, n do
  local b = 5 * (i - 1)
  prune(b, now_ms)
  prune_queue(b, now_ms)
end
for i = 1, n do
  local ok, reason = admitted(5 * (i - 1), mode, token, k, false)
  if not ok then
    blocked, why = i, reason
    break
  end
end
if blocked == 0 then
  return granted(n, grant(n, token, ttl, now_ms, now_us), mode)
end
local retry = -2
if why == 'h' then
  retry = retry_after(5 * (blocked - 1), now_ms)
end
if ARGV[5] == '1' then
  return {0, blocked, retry}
end
local arrival, deadline = fmt(now_us), fmt(now_ms + live)
for i = 1, n do
  local b = 5 * (i - 1)
  redis.call('ZADD', KEYS[b+3], 'NX', arrival, token)
  redis.call('ZADD', KEYS[b+4], deadline, token)
  if k == 'w' then
    redis.call('ZADD', KEYS[b+5], 'NX', arrival, token)
  end
  for j = 3, 5 do
    keep(b+j, 2 * live)
  end
end
return {0, blocked, retry}
