-- A token leaves the queues (its Lock gave up, or its outcome is unknown)
-- and releases what it holds after all; the waiters that may go now are
-- woken.
-- KEYS: five per resource (see lib.lua), then the token's revocation
-- marker.
-- ARGV[1]: token, ARGV[2]: mode, ARGV[3]: the base name of wake channels,
-- ARGV[4]: how long to keep the revocation marker in ms, "0" for none,
-- ARGV[5]: "1" to announce a release on the channel named like the
-- holders key rather than wake queued waiters.
local n = (#KEYS - 1) / 5
local token, mode = ARGV[1], ARGV[2]
local now_ms = clock()
for i = 1, n do
  local b = 5 * (i - 1)
  local h, f = KEYS[b+1], KEYS[b+2]
  local queued = redis.call('ZREM', KEYS[b+3], token) == 1
  redis.call('ZREM', KEYS[b+4], token)
  redis.call('ZREM', KEYS[b+5], token)
  local held = redis.call('ZREM', h, token) == 1
  if held then
    redis.call('HDEL', f, token)
    if redis.call('HGET', f, 'w') == token then
      redis.call('HDEL', f, 'w')
    end
  end
  prune(b, now_ms)
  if held and ARGV[5] == '1' then
    redis.call('PUBLISH', h, '')
  elseif held or queued then
    wake_next(b, mode, ARGV[3])
  end
  tidy(b)
end
if ARGV[4] ~= '0' then
  redis.call('SET', KEYS[#KEYS], '1', 'PX', ARGV[4])
end
return 0
