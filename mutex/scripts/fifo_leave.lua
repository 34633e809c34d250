-- FIFO mode: a waiter leaves the queues (cancelled, or its outcome unknown).
-- If it holds a lock key after all, that is released too. The new head of a
-- queue is woken when the lock is free.
-- KEYS: for each resource, its lock key, queue key and deadline key.
-- ARGV[1]: owner token, ARGV[2]: the base name of wake channels.
local prefix = ARGV[1] .. ':'
for i = 1, #KEYS / 3 do
  local lock, queue = KEYS[3*i-2], KEYS[3*i-1]
  local head = redis.call('ZRANGE', queue, 0, 0)
  redis.call('ZREM', queue, ARGV[1])
  redis.call('ZREM', KEYS[3*i], ARGV[1])
  local v = redis.call('GET', lock)
  local freed = false
  if v and string.sub(v, 1, #prefix) == prefix then
    redis.call('DEL', lock)
    freed = true
  end
  if (freed or head[1] == ARGV[1]) and (freed or not v) then
    local next = redis.call('ZRANGE', queue, 0, 0)
    if next[1] then
      wake(ARGV[2], next[1])
    end
  end
end
return 0
