-- FIFO mode: release the lock keys that still hold ARGV[1]
-- ("<token>:<fence>") and wake the head of each queue by publishing its
-- token on the wake channel of its Mutex.
-- KEYS: for each resource, its lock key and queue key.
-- ARGV[2]: the lease's fence; ARGV[3]: "1" if the lease is young enough that
-- the server clock may not have passed its fence yet; ARGV[4]: the base
-- name of wake channels.
-- Returns the number of keys released.
local n = 0
for i = 1, #KEYS / 2 do
  local lock = KEYS[2*i-1]
  if redis.call('GET', lock) == ARGV[1] then
    redis.call('DEL', lock)
    n = n + 1
    local head = redis.call('ZRANGE', KEYS[2*i], 0, 0)
    if head[1] then
      wake(ARGV[4], head[1])
    end
  end
end
if n > 0 and ARGV[3] == '1' then
  pass(tonumber(ARGV[2]))
end
return n
