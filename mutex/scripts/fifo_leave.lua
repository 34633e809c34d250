-- FIFO mode: a waiter leaves the queues (cancelled, or its outcome unknown).
-- If it holds a lock key after all, that is released too. The new head of a
-- queue is woken when the lock is free.
-- KEYS: for each resource, its lock key, queue key and deadline key; then
-- the revocation marker of the token.
-- ARGV[1]: owner token, ARGV[2]: the base name of wake channels (empty on
-- a Cluster, see wake),
-- ARGV[3]: how long to keep the revocation marker in ms, or "0" for none:
-- it makes a request of the token that reaches Redis only later do nothing.
for i = 1, (#KEYS - 1) / 3 do
  local lock, queue = KEYS[3*i-2], KEYS[3*i-1]
  local head = redis.call('ZRANGE', queue, 0, 0)
  redis.call('ZREM', queue, ARGV[1])
  redis.call('ZREM', KEYS[3*i], ARGV[1])
  local v = redis.call('GET', lock)
  local freed = false
  if owned(v, ARGV[1]) then
    redis.call('DEL', lock)
    freed = true
  end
  if (freed or head[1] == ARGV[1]) and (freed or not v) then
    local next = redis.call('ZRANGE', queue, 0, 0)
    if next[1] then
      wake(ARGV[2], lock, next[1])
    end
  end
end
if ARGV[3] ~= '0' then
  redis.call('SET', KEYS[#KEYS], '1', 'PX', ARGV[3])
end
return 0
