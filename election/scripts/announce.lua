-- Record the leader of a term in KEYS[1], unless a later term is recorded
-- there, and announce it on the channel named like the key.
-- ARGV[1]: the term's fence (a decimal integer), ARGV[2]: the leader's
-- value, ARGV[3]: how long the record lasts, in ms.
-- The record is "<fence> <since> <value>", since being the server clock in
-- microseconds when the term was first recorded.
-- Returns the record, or false when a later term is recorded.
local function later(a, b)
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local fence = string.match(cur, '^(%d+) ')
  if fence == ARGV[1] then
    -- Recorded already: a re-sent request.
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return cur
  end
  if fence and later(fence, ARGV[1]) then
    return false
  end
end
local t = redis.call('TIME')
local rec = ARGV[1] .. ' ' .. t[1] .. string.format('%06d', tonumber(t[2])) .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], rec, 'PX', ARGV[3])
redis.call('PUBLISH', KEYS[1], rec)
return rec
