-- A queued token takes every resource if it may now.
-- KEYS: five per resource (see lib.lua).
-- ARGV[1]: token, ARGV[2]: mode, ARGV[3]: TTL in ms, ARGV[4]: the base
-- name of wake channels.
-- Returns {1, fence, free...} when granted (or found granted: a re-sent
-- request); {0, index, retry} when resource index is in the way (retry as
-- in join.lua); {-1, index} when the token is no longer queued for
-- resource index (its deadline passed).
local n = #KEYS / 5
local token, mode = ARGV[1], ARGV[2]
local now_ms, now_us = clock()
local again = regrant(n, token, mode, now_ms)
if again then
  return again
end
for i = 1, n do
  local b = 5 * (i - 1)
  prune(b, now_ms)
  prune_queue(b, now_ms)
  if not redis.call('ZSCORE', KEYS[b+3], token) then
    return {-1, i}
  end
end
local k = kind(token)
for i = 1, n do
  local b = 5 * (i - 1)
  local ok, why = admitted(b, mode, token, k, true)
  if not ok then
    local retry = -2
    if why == 'h' then
      retry = retry_after(b, now_ms)
    end
    return {0, i, retry}
  end
end
local fence = grant(n, token, tonumber(ARGV[3]), now_ms, now_us)
for i = 1, n do
  local b = 5 * (i - 1)
  redis.call('ZREM', KEYS[b+3], token)
  redis.call('ZREM', KEYS[b+4], token)
  redis.call('ZREM', KEYS[b+5], token)
  -- The next waiter of a semaphore may find a permit left. (Readers go
  -- together: a release woke them all.)
  if mode ~= 'rw' then
    wake_next(b, mode, ARGV[4])
  end
end
return granted(n, fence, mode)
