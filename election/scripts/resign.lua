-- Delete the leader record KEYS[1] if it is still the record of the term
-- with fence ARGV[1]. Returns 1 if it was, else 0.
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(%d+) ') == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
