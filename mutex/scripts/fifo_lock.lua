-- FIFO mode: take every resource at once if none is held or queued for;
-- otherwise (unless ARGV[4] is "1", a TryLock) join the queue of each.
-- KEYS: for each resource, its lock key, queue key and deadline key; then
-- the revocation marker of the token.
-- ARGV[1]: owner token, ARGV[2]: TTL in ms, ARGV[3]: queue key TTL in ms,
-- ARGV[4]: "1" to only try, ARGV[5]: "1" on the request's first send, "2"
-- on a re-send.
-- Returns {1, fence} when granted; {0, index, pttl} when resource index is
-- held or queued for (pttl of its lock key, or -2 if only queued for);
-- {0, 1, -3} when the token was revoked.
-- Queue scores are the server's TIME in microseconds at arrival, so every
-- queue orders the waiters in the order their calls reached Redis.
local n = (#KEYS - 1) / 3
-- A re-sent request finds its own grant, or a grant a release made to its
-- queue entry meanwhile: confirm it for the whole TTL.
if ARGV[5] ~= '1' then
  local fence = reclaim(ARGV[1], ARGV[2], n, 3)
  if fence then
    return {1, fence}
  end
end
if redis.call('EXISTS', KEYS[#KEYS]) == 1 then
  return {0, 1, -3}
end
local arrival = now()
local blocked, found = 0, 0
for i = 1, n do
  found = redis.call('EXISTS', KEYS[3*i-2], KEYS[3*i-1])
  if found > 0 then
    blocked = i
    break
  end
end
if blocked == 0 then
  local value = ARGV[1] .. ':' .. arrival
  for i = 1, n do
    redis.call('SET', KEYS[3*i-2], value, 'PX', ARGV[2])
  end
  return {1, arrival}
end
if ARGV[4] == '1' then
  return {0, blocked, redis.call('PTTL', KEYS[3*blocked-2])}
end
for i = 1, n do
  -- NX: a re-sent request keeps its place.
  redis.call('ZADD', KEYS[3*i-1], 'NX', arrival, ARGV[1])
  -- A queue that existed already has an expiry, renewed by its waiters.
  if i ~= blocked or found ~= 2 then
    redis.call('PEXPIRE', KEYS[3*i-1], ARGV[3])
  end
end
return {0, blocked, -2}
