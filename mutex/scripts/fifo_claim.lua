-- FIFO mode: a queued waiter takes its resources if it is at the head of
-- every queue and no lock key is held.
-- KEYS: for each resource, its lock key, queue key and deadline key; then
-- the revocation marker of the token, which a claim need not check: a
-- revoked token has left its queues, and only fifo_lock, which checks it,
-- puts a token in a queue.
-- ARGV[1]: owner token, ARGV[2]: TTL in ms. A deadline entry the waiter may
-- have is removed later by its Mutex's renewal, off the handoff path.
-- Returns {1, fence} when granted, or found granted: by a release whose
-- message did not arrive, or by this very request sent before (go-redis
-- re-sends a request whose reply was lost); {0, index} when not at the head
-- of the queue of resource index or when its lock is held; {-1, index} when
-- the waiter is no longer queued there (its deadline ran out).
local n = (#KEYS - 1) / 3
local fence = reclaim(ARGV[1], ARGV[2], n, 3)
if fence then
  return {1, fence}
end
for i = 1, n do
  local head = redis.call('ZRANGE', KEYS[3*i-1], 0, 0)
  if head[1] ~= ARGV[1] then
    if redis.call('ZSCORE', KEYS[3*i-1], ARGV[1]) then
      return {0, i}
    end
    return {-1, i}
  end
end
fence = now()
local value = ARGV[1] .. ':' .. fence
if n == 1 then
  if not redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[2]) then
    return {0, 1}
  end
else
  for i = 1, n do
    if redis.call('EXISTS', KEYS[3*i-2]) == 1 then
      return {0, i}
    end
  end
  for i = 1, n do
    redis.call('SET', KEYS[3*i-2], value, 'PX', ARGV[2])
  end
end
for i = 1, n do
  redis.call('ZREM', KEYS[3*i-1], ARGV[1])
end
return {1, fence}
