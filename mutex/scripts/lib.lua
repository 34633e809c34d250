-- Helpers put in front of every script of the package.

-- now returns the server clock, TIME, in microseconds as a decimal string:
-- the fencing token of a grant made now.
local function now()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end

-- pass reports whether the server clock is past fence (a number), so that
-- a grant after this script gets a greater fence. It almost always is
-- already. It reads the clock up to tries times (1000 if nil), for a fence
-- taken a moment ago; a clock still not past fence after that is stuck or
-- stepped back.
local function pass(fence, tries)
  for _ = 1, tries or 1000 do
    local t = redis.call('TIME')
    if tonumber(t[1]) * 1000000 + tonumber(t[2]) > fence then return true end
  end
  return false
end

-- stalled returns the CLOCK error reply of a release that must not go
-- ahead, because the server clock has not passed the lease's fence (a
-- decimal string), or nil. A young lease (young is '1') waits for the
-- clock a moment; see pass.
local function stalled(fence, young)
  local tries = 1
  if young == '1' then tries = 1000 end
  if not pass(tonumber(fence), tries) then
    return redis.error_reply('CLOCK server clock has not passed the lease fence ' .. fence .. '; keys kept until their TTL')
  end
  return nil
end

-- announce publishes msg on channel. On a Redis Cluster (sharded is '1')
-- of Redis 7 or later, it goes through sharded pub/sub, so that only the
-- shard that owns the channel's slot carries it.
local function announce(channel, msg, sharded)
  if sharded == '1' and redis.REDIS_VERSION_NUM then
    redis.call('SPUBLISH', channel, msg)
  else
    redis.call('PUBLISH', channel, msg)
  end
end

-- wake publishes a FIFO waiter's token on a wake channel of its Mutex: the
-- token starts with the Mutex's id and a dot, and the channel is base
-- followed by that id; or, with an empty base (on a Cluster), the lock key
-- followed by ':w:' and the id, in the lock key's slot. With a fence, the
-- message tells the waiter that it was granted the lock with that fence.
local function wake(base, lock, token, fence)
  local id = string.match(token, '^([^.]*)%.') or ''
  local msg = token
  if fence then msg = token .. ' ' .. fence end
  if base == '' then
    announce(lock .. ':w:' .. id, msg, '1')
  else
    redis.call('PUBLISH', base .. id, msg)
  end
end

-- owned returns the fence of the lock value v if v was stored for token,
-- or nil.
local function owned(v, token)
  local prefix = token .. ':'
  if v and string.sub(v, 1, #prefix) == prefix then
    return string.sub(v, #prefix + 1)
  end
  return nil
end

-- reclaim returns the fence of a grant to token found under KEYS[1], after
-- resetting the expiry of each of the n lock keys, every stride-th key from
-- the first, to ttl ms; or nil if there is none. A re-sent request finds its
-- own grant this way, and a FIFO waiter a grant a release made to it.
local function reclaim(token, ttl, n, stride)
  local fence = owned(redis.call('GET', KEYS[1]), token)
  if fence then
    for i = 1, n do
      redis.call('PEXPIRE', KEYS[stride*(i-1)+1], ttl)
    end
  end
  return fence
end

-- batched runs redis.call(cmd, key, ...) over list from index first on, at
-- most step values per call (Lua's unpack fails on a few thousand values),
-- and returns the replies of array commands joined in order.
local function batched(cmd, key, list, first, step)
  local out = {}
  for i = first, #list, step do
    local r = redis.call(cmd, key, unpack(list, i, math.min(i + step - 1, #list)))
    if type(r) == 'table' then
      for j = 1, #r do out[#out + 1] = r[j] end
    end
  end
  return out
end

