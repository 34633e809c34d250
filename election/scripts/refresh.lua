-- Keep the leader record KEYS[1] for ARGV[2] more ms if it is still the
-- record of the term with fence ARGV[1]. Returns 1 if it is, else 0.
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(%d+) ') == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
