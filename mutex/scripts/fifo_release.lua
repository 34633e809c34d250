-- FIFO mode: release the lock keys that still hold ARGV[1]
-- ("<token>:<fence>") and hand each to the head of its queue. A head that
-- waits for this one key (its token has the kind "s") is granted the lock
-- at once, for ARGV[5] ms until it confirms with an Extend, and told so
-- with its fence; any other head is woken to claim its keys itself.
-- KEYS: for each resource, its lock key and queue key.
-- ARGV[2]: the lease's fence; ARGV[3]: "1" if the lease is young enough that
-- the server clock may not have passed its fence yet; ARGV[4]: the base
-- name of wake channels, empty on a Cluster (see wake); ARGV[5]: how long
-- a grant lasts unconfirmed, in ms.
-- Returns the number of keys released, or a CLOCK error when the server
-- clock has not passed the fence: the keys are then kept, to expire with
-- their TTL (see release.lua).
local held = {}
for i = 1, #KEYS / 2 do
  if redis.call('GET', KEYS[2*i-1]) == ARGV[1] then
    held[#held + 1] = i
  end
end
local err = #held > 0 and stalled(ARGV[2], ARGV[3])
if err then
  return err
end
for _, i in ipairs(held) do
  local lock, queue = KEYS[2*i-1], KEYS[2*i]
  local head = redis.call('ZRANGE', queue, 0, 0)[1]
  if head and string.match(head, '^[^.]*%.s') then
    local fence = now()
    redis.call('SET', lock, head .. ':' .. fence, 'PX', ARGV[5])
    redis.call('ZREM', queue, head)
    wake(ARGV[4], lock, head, fence)
  else
    redis.call('DEL', lock)
    if head then
      wake(ARGV[4], lock, head)
    end
  end
end
return #held
