-- FIFO mode, run periodically by every process with queued waiters of one
-- resource: renew the deadlines of its waiters, drop waiters whose deadline
-- passed, and wake the head if the lock is free.
-- KEYS[1]: lock key, KEYS[2]: queue key, KEYS[3]: deadline key.
-- ARGV[1]: liveness window in ms, ARGV[2]: the base name of wake channels
-- (empty on a Cluster, see wake),
-- ARGV[3]: the number n of tokens to renew, ARGV[4..3+n]: the tokens of this
-- process's waiters, ARGV[4+n..]: tokens of its waiters granted since, whose
-- deadline entries go.
-- A waiter's deadline is its entry in the deadline set, or, before its first
-- renewal, its arrival time plus the window.
-- Returns {head or false, lost tokens...}: the head woken (if any) and the
-- given tokens that are no longer queued.
-- Commands take at most step values at a time, for any number of waiters.
local step = 1000
local window = tonumber(ARGV[1])
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local result = {false}
local n = tonumber(ARGV[3])
if #ARGV > 3 + n then
  batched('ZREM', KEYS[3], ARGV, 4 + n, step)
end
if n > 0 then
  local tokens = {}
  for i = 4, 3 + n do tokens[#tokens + 1] = ARGV[i] end
  local scores = batched('ZMSCORE', KEYS[2], tokens, 1, step)
  local args = {}
  for i = 1, #tokens do
    if scores[i] then
      args[#args + 1] = now_ms + window
      args[#args + 1] = tokens[i]
    else
      result[#result + 1] = tokens[i]
    end
  end
  if #args > 0 then
    batched('ZADD', KEYS[3], args, 1, 2 * step)
  end
end
local dead = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. now_ms)
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', now_us - window * 1000))
if #old > 0 then
  local ds = batched('ZMSCORE', KEYS[3], old, 1, step)
  for i = 1, #old do
    if not ds[i] then dead[#dead + 1] = old[i] end
  end
end
if #dead > 0 then
  batched('ZREM', KEYS[2], dead, 1, step)
  batched('ZREM', KEYS[3], dead, 1, step)
end
redis.call('PEXPIRE', KEYS[2], 2 * window)
redis.call('PEXPIRE', KEYS[3], 2 * window)
if redis.call('EXISTS', KEYS[1]) == 0 then
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if head[1] then
    wake(ARGV[2], KEYS[1], head[1])
    result[1] = head[1]
  end
end
return result
