-- Move keys of the previous layout to their names in this one (wxtasks migrate): RENAME
-- keeps the value and the TTL. A key already moved (a re-run) is skipped.
-- KEYS[2i-1] = a key's old name      KEYS[2i] = its new name
-- returns how many keys moved
local moved = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
    moved = moved + 1
  end
end
return moved
