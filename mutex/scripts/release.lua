-- Release the lock keys in KEYS that still hold ARGV[1] ("<token>:<fence>")
-- and announce each release on the channel named like the key, with the
-- id of the releasing Mutex (the token's part before its first dot): that
-- Mutex woke its own waiters already.
-- ARGV[2]: the lease's fence in microseconds; ARGV[3]: "1" if the lease is
-- young enough that the server clock may not have passed its fence yet;
-- ARGV[4]: "1" on a Cluster (see announce).
-- Returns the number of keys released.
local n = 0
local id = string.match(ARGV[1], '^([^.]*)%.') or ''
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    redis.call('DEL', KEYS[i])
    announce(KEYS[i], id, ARGV[4])
    n = n + 1
  end
end
if n > 0 and ARGV[3] == '1' then
  -- Fences are server microseconds. A grant that follows this release must
  -- see a later microsecond than this lease's fence, so wait for the clock
  -- to pass it (it almost always has already).
  pass(tonumber(ARGV[2]))
end
return n
