-- FIFO mode: release the lock keys that still hold ARGV[1]
-- ("<token>:<fence>") and wake the head of each queue by publishing its
-- token on the wake channel of its Mutex.
-- KEYS: for each resource, its lock key and queue key.
-- ARGV[2]: the lease's fence; ARGV[3]: "1" if the lease is young enough that
-- the server clock may not have passed its fence yet; ARGV[4]: the base
-- name of wake channels.
-- Wakes a FIFO waiter: its token starts with the id of its Mutex, whose
-- wake channel is <ARGV channel base><id>.
local function wake(base, token)
  local id = string.match(token, '^([^.]*)%.') or ''
  redis.call('PUBLISH', base .. id, token)
end
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
  local fence = tonumber(ARGV[2])
  for _ = 1, 1000 do
    local t = redis.call('TIME')
    if tonumber(t[1]) * 1000000 + tonumber(t[2]) > fence then break end
  end
end
return n
