-- Helpers put in front of every script of the package.
--
-- A resource has five Redis keys, passed in this order, all in its hash
-- slot: the holders (a sorted set of owner tokens scored by their expiry,
-- server milliseconds), the meta hash ("last": the last fence granted;
-- each holder's token: its fence; "w": the token of the writer holding
-- it), the queue (a sorted set of waiting tokens scored by arrival, server
-- microseconds), the waiters' deadlines (server milliseconds) and the queue
-- of writers (read-write mode). Scripts over several resources take five
-- keys per resource; the resource at base b has KEYS[b+1..b+5].
--
-- A token is "<process id>.<kind><random>": kind "s" for a semaphore
-- permit, "r" for a reader, "w" for a writer. The mode argument is
-- "s<permits>" for a semaphore and "rw" for a read-write lock.

-- clock returns the server clock, TIME, in milliseconds and in
-- microseconds.
local function clock()
  local t = redis.call('TIME')
  local s, us = tonumber(t[1]), tonumber(t[2])
  return s * 1000 + math.floor(us / 1000), s * 1000000 + us
end

-- fmt formats an integral number without an exponent.
local function fmt(x)
  return string.format('%.0f', x)
end

local function kind(token)
  return string.match(token, '^[^.]*%.(.)')
end

-- batched runs redis.call(cmd, key, ...) over list, at most 1000 values per
-- call (Lua's unpack fails on a few thousand values).
local function batched(cmd, key, list)
  for i = 1, #list, 1000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- keep makes KEYS[i] live for at least ms milliseconds.
local function keep(i, ms)
  local p = redis.call('PTTL', KEYS[i])
  if p ~= -2 and p < ms then
    redis.call('PEXPIRE', KEYS[i], ms)
  end
end

-- prune drops the holders of resource b whose expiry has passed.
local function prune(b, now_ms)
  local h, f = KEYS[b+1], KEYS[b+2]
  local dead = redis.call('ZRANGEBYSCORE', h, '-inf', fmt(now_ms))
  if #dead > 0 then
    batched('ZREM', h, dead)
    batched('HDEL', f, dead)
    local w = redis.call('HGET', f, 'w')
    if w and not redis.call('ZSCORE', h, w) then
      redis.call('HDEL', f, 'w')
    end
  end
end

-- prune_queue drops the waiters of resource b whose deadline has passed:
-- their processes stopped renewing them.
local function prune_queue(b, now_ms)
  local dead = redis.call('ZRANGEBYSCORE', KEYS[b+4], '-inf', fmt(now_ms))
  if #dead > 0 then
    batched('ZREM', KEYS[b+3], dead)
    batched('ZREM', KEYS[b+4], dead)
    batched('ZREM', KEYS[b+5], dead)
  end
end

-- admitted reports whether token, of kind k, may take resource b now, and
-- if not, why: 'h' when holders are in the way, 'q' when waiters are.
-- A queued token must head the queue (a reader: have no writer ahead of
-- it); one that is not queued must find no waiter in its way.
local function admitted(b, mode, token, k, queued)
  local h, f, q = KEYS[b+1], KEYS[b+2], KEYS[b+3]
  if mode == 'rw' then
    if redis.call('HEXISTS', f, 'w') == 1 then
      return false, 'h'
    end
    if k == 'w' then
      if queued then
        if redis.call('ZRANGE', q, 0, 0)[1] ~= token then
          return false, 'q'
        end
      elseif redis.call('EXISTS', q) == 1 then
        return false, 'q'
      end
      if redis.call('ZCARD', h) > 0 then
        return false, 'h'
      end
      return true
    end
    local fw = redis.call('ZRANGE', KEYS[b+5], 0, 0)[1]
    if fw then
      if not queued then
        return false, 'q'
      end
      local rw, rt = redis.call('ZRANK', q, fw), redis.call('ZRANK', q, token)
      if rw and rt and rw < rt then
        return false, 'q'
      end
    end
    return true
  end
  if queued then
    if redis.call('ZRANGE', q, 0, 0)[1] ~= token then
      return false, 'q'
    end
  elseif redis.call('EXISTS', q) == 1 then
    return false, 'q'
  end
  if redis.call('ZCARD', h) >= tonumber(string.sub(mode, 2)) then
    return false, 'h'
  end
  return true
end

-- retry_after returns how many milliseconds are left until the first
-- holder of resource b expires, or -2 if it has none.
local function retry_after(b, now_ms)
  local first = redis.call('ZRANGE', KEYS[b+1], 0, 0, 'WITHSCORES')
  if first[2] then
    return math.max(1, tonumber(first[2]) - now_ms)
  end
  return -2
end

-- grant makes token a holder of the n resources for ttl ms and returns its
-- fence: the server clock in microseconds, raised if needed above the last
-- fence of every resource.
local function grant(n, token, ttl, now_ms, now_us)
  local fence = now_us
  for i = 1, n do
    local last = tonumber(redis.call('HGET', KEYS[5*i-3], 'last') or '0')
    if last >= fence then
      fence = last + 1
    end
  end
  local fs, exp = fmt(fence), fmt(now_ms + ttl)
  local k = kind(token)
  for i = 1, n do
    local b = 5 * (i - 1)
    redis.call('ZADD', KEYS[b+1], exp, token)
    redis.call('HSET', KEYS[b+2], 'last', fs, token, fs)
    if k == 'w' then
      redis.call('HSET', KEYS[b+2], 'w', token)
    end
    keep(b+1, ttl)
    keep(b+2, ttl)
  end
  return fs
end

-- granted returns the reply to a grant of n resources with fence: 1, the
-- fence, and the permits left on each resource (semaphores only).
local function granted(n, fence, mode)
  local out = {1, fence}
  for i = 1, n do
    local free = 0
    if mode ~= 'rw' then
      free = tonumber(string.sub(mode, 2)) - redis.call('ZCARD', KEYS[5*i-4])
    end
    out[#out + 1] = free
  end
  return out
end

-- regrant returns the reply to a request whose token holds every resource
-- already (a re-sent request whose first send was granted), or nil.
local function regrant(n, token, mode, now_ms)
  local fence = redis.call('HGET', KEYS[2], token)
  if not fence then
    return nil
  end
  for i = 1, n do
    local s = redis.call('ZSCORE', KEYS[5*i-4], token)
    if not s or tonumber(s) <= now_ms then
      return nil
    end
  end
  return granted(n, fence, mode)
end

-- wake publishes the tokens on the wake channel of their processes, base
-- followed by the process id: one message per process.
local function wake(base, tokens)
  local by, order = {}, {}
  for _, t in ipairs(tokens) do
    local id = string.match(t, '^([^.]*)%.') or ''
    if not by[id] then
      by[id] = {}
      order[#order + 1] = id
    end
    local l = by[id]
    l[#l + 1] = t
  end
  for _, id in ipairs(order) do
    redis.call('PUBLISH', base .. id, table.concat(by[id], ' '))
  end
end

-- wake_next wakes the waiters of resource b that may take it now: the head
-- of a semaphore's queue while a permit is free; in read-write mode, unless
-- a writer holds it, the writer at the head once no reader holds it, or
-- every reader ahead of the first queued writer.
local function wake_next(b, mode, base)
  local q = KEYS[b+3]
  if mode == 'rw' then
    if redis.call('HEXISTS', KEYS[b+2], 'w') == 1 then
      return
    end
    local head = redis.call('ZRANGE', q, 0, 0)[1]
    if not head then
      return
    end
    if kind(head) == 'w' then
      if redis.call('ZCARD', KEYS[b+1]) == 0 then
        wake(base, {head})
      end
      return
    end
    local last = 999
    local fw = redis.call('ZRANGE', KEYS[b+5], 0, 0)[1]
    if fw then
      local r = redis.call('ZRANK', q, fw)
      if r then
        last = math.min(r - 1, last)
      end
    end
    wake(base, redis.call('ZRANGE', q, 0, last))
    return
  end
  if redis.call('ZCARD', KEYS[b+1]) < tonumber(string.sub(mode, 2)) then
    local head = redis.call('ZRANGE', q, 0, 0)[1]
    if head then
      wake(base, {head})
    end
  end
end

-- tidy deletes the meta hash of resource b once it has neither holders nor
-- waiters, after the server clock has passed its last fence, so that a
-- later grant, which finds no last fence, still gets a greater one.
local function tidy(b)
  if redis.call('EXISTS', KEYS[b+1], KEYS[b+3]) > 0 then
    return
  end
  local last = tonumber(redis.call('HGET', KEYS[b+2], 'last') or '0')
  for _ = 1, 1000 do
    local _, now_us = clock()
    if now_us > last then
      break
    end
  end
  redis.call('DEL', KEYS[b+2])
end

