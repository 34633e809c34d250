-- Run periodically by every process with waiters queued for one resource:
-- renew the deadlines of its waiters, drop waiters whose deadline passed
-- and holders whose expiry passed, and wake the waiters that may go (a
-- wake-up may have been lost, or a holder may have crashed).
-- KEYS: the five keys of the resource (see lib.lua).
-- ARGV[1]: mode, ARGV[2]: liveness of a queue entry in ms, ARGV[3]: the
-- base name of wake channels, ARGV[4..]: the tokens of this process's
-- waiters.
-- Returns the given tokens that are no longer queued.
local now_ms = clock()
local live = tonumber(ARGV[2])
local deadline = fmt(now_ms + live)
local lost = {}
for j = 4, #ARGV do
  if redis.call('ZSCORE', KEYS[3], ARGV[j]) then
    redis.call('ZADD', KEYS[4], deadline, ARGV[j])
  else
    lost[#lost + 1] = ARGV[j]
  end
end
prune(0, now_ms)
prune_queue(0, now_ms)
for j = 3, 5 do
  keep(j, 2 * live)
end
wake_next(0, ARGV[1], ARGV[3])
return lost
