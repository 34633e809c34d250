-- Give up the request of a token whose outcome is unknown (its reply was
-- lost): release the lock keys in KEYS[1..n] whose value starts with
-- ARGV[1] .. ':', and set the token's revocation marker KEYS[n+1] for
-- ARGV[2] ms so that the request, should it reach Redis only now, takes
-- nothing. ARGV[3]: "1" on a Cluster (see announce).
local n = #KEYS - 1
local released = 0
for i = 1, n do
  if owned(redis.call('GET', KEYS[i]), ARGV[1]) then
    redis.call('DEL', KEYS[i])
    announce(KEYS[i], '', ARGV[3])
    released = released + 1
  end
end
redis.call('SET', KEYS[n + 1], '1', 'PX', ARGV[2])
return released
