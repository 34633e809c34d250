-- Release the resources that the token still holds, and tell the waiters
-- that may go now.
-- KEYS: five per resource (see lib.lua).
-- ARGV[1]: token, ARGV[2]: mode, ARGV[3]: the base name of wake channels,
-- ARGV[4]: "1" to announce each release on the channel named like the
-- holders key (waiters that race), rather than wake queued waiters.
-- Returns the number of resources released.
local n = #KEYS / 5
local token, mode = ARGV[1], ARGV[2]
local now_ms = clock()
local released = 0
for i = 1, n do
  local b = 5 * (i - 1)
  local h, f = KEYS[b+1], KEYS[b+2]
  local s = redis.call('ZSCORE', h, token)
  if s and tonumber(s) > now_ms then
    released = released + 1
    redis.call('ZREM', h, token)
    redis.call('HDEL', f, token)
    if redis.call('HGET', f, 'w') == token then
      redis.call('HDEL', f, 'w')
    end
    if ARGV[4] == '1' then
      redis.call('PUBLISH', h, '')
    else
      prune(b, now_ms)
      wake_next(b, mode, ARGV[3])
    end
    tidy(b)
  end
end
return released
