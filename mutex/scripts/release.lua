-- Release the lock keys in KEYS that still hold ARGV[1] ("<token>:<fence>")
-- and announce each release on the channel named like the key, with the
-- id of the releasing Mutex (the token's part before its first dot): that
-- Mutex woke its own waiters already.
-- ARGV[2]: the lease's fence in microseconds; ARGV[3]: "1" if the lease is
-- young enough that the server clock may not have passed its fence yet;
-- ARGV[4]: "1" on a Cluster (see announce).
-- Returns the number of keys released, or a CLOCK error when the server
-- clock has not passed the fence: the keys are then kept, to expire with
-- their TTL.
local held = {}
for i = 1, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] then
    held[#held + 1] = KEYS[i]
  end
end
-- Fences are server microseconds. A grant that follows this release must
-- see a later microsecond than this lease's fence, so the clock must have
-- passed it before the keys go. It almost always has; a young lease waits
-- for it a moment. A clock that has not moved past the fence (stuck, or
-- stepped back) would let the next grant repeat it: keep the keys instead,
-- so that no grant comes before they expire.
local err = #held > 0 and stalled(ARGV[2], ARGV[3])
if err then
  return err
end
local id = string.match(ARGV[1], '^([^.]*)%.') or ''
for _, key in ipairs(held) do
  redis.call('DEL', key)
  announce(key, id, ARGV[4])
end
return #held
