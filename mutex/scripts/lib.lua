-- Helpers put in front of every script of the package.

-- now returns the server clock, TIME, in microseconds as a decimal string:
-- the fencing token of a grant made now.
local function now()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

-- pass waits until the server clock is past fence (a number), so that a
-- grant after this script gets a greater fence. It almost always is already.
local function pass(fence)
  for _ = 1, 1000 do
    local t = redis.call('TIME')
    if tonumber(t[1]) * 1000000 + tonumber(t[2]) > fence then return end
  end
end

-- wake publishes a FIFO waiter's token on the wake channel of its Mutex:
-- the token starts with the Mutex's id and a dot, and the channel is base
-- followed by that id. With a fence, the message tells the waiter that it
-- was granted the lock with that fence.
local function wake(base, token, fence)
  local id = string.match(token, '^([^.]*)%.') or ''
  local msg = token
  if fence then msg = token .. ' ' .. fence end
  redis.call('PUBLISH', base .. id, msg)
end

