-- Count the resources on which a request of kind ARGV[2] would not be
-- granted now (by holders, or by waiters queued ahead of it), without
-- changing anything.
-- KEYS: five per resource (see lib.lua). ARGV[1]: mode, ARGV[2]: kind.
local n = #KEYS / 5
local mode, k = ARGV[1], ARGV[2]
local now_ms = clock()
local after = '(' .. fmt(now_ms)
local busy = 0
for i = 1, n do
  local b = 5 * (i - 1)
  local h, f = KEYS[b+1], KEYS[b+2]
  local holders = redis.call('ZCOUNT', h, after, '+inf')
  local locked
  if mode == 'rw' then
    local w = redis.call('HGET', f, 'w')
    local s = w and redis.call('ZSCORE', h, w)
    local writer = s and tonumber(s) > now_ms
    if k == 'w' then
      locked = holders > 0 or redis.call('EXISTS', KEYS[b+3]) == 1
    else
      locked = writer or redis.call('EXISTS', KEYS[b+5]) == 1
    end
  else
    locked = holders >= tonumber(string.sub(mode, 2)) or redis.call('EXISTS', KEYS[b+3]) == 1
  end
  if locked then
    busy = busy + 1
  end
end
return busy
