-- limits: set or clear a flow limit (flow.go, flow.lua) and let the keys it held back run again.
-- KEYS: limits, state, rotation, wait, wake (flow:state, flow:rotation, flow:wait: see keys.go).
-- ARGV[1] = "set" or "clear"; ARGV[2] = the most fields limits may hold; set: ARGV[3] = field ("c:<key>",
-- "c:*", "r:<key>", "r:*" or "q"), ARGV[4] = value ("<n>" or "<n>/<period ms>"); clear: ARGV[3..4] = the fields
-- to remove.
-- Any change moves the keys it concerns that are held back (state 'f' at their limit, 'w' over their rate: one
-- key, or every key for a default) back to the rotation, and wakes a consumer: the next pickup applies the new
-- limits (a key still over them goes back to where it was). Nothing else changes: tasks running keep their
-- slots, and no task moves.
-- Returns 1, or -1 when set would add a field to a full limits (nothing stored).
local limits, state, rot, waits, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local op, most = ARGV[1], tonumber(ARGV[2])
if op == 'set' then
  if redis.call('HEXISTS', limits, ARGV[3]) == 0 and redis.call('HLEN', limits) >= most then return -1 end
  redis.call('HSET', limits, ARGV[3], ARGV[4])
else
  redis.call('HDEL', limits, ARGV[3], ARGV[4])
end
local back = {}
for i = 3, (op == 'set') and 3 or 4 do
  local f = ARGV[i]
  if f and f ~= '' and f ~= 'q' then
    local k = string.sub(f, 3)
    if k == '*' then
      local all = redis.call('HGETALL', state)
      for j = 1, #all, 2 do
        if all[j + 1] == 'f' or all[j + 1] == 'w' then back[#back + 1] = all[j] end
      end
    else
      local s = redis.call('HGET', state, k)
      if s == 'f' or s == 'w' then back[#back + 1] = k end
    end
  end
end
local seen = {}
local moved = {}
for _, k in ipairs(back) do
  if not seen[k] then
    seen[k] = true
    moved[#moved + 1] = k
    redis.call('HSET', state, k, 'r')
    redis.call('ZREM', waits, k)
  end
end
if #moved > 0 then redis.call('RPUSH', rot, unpack(moved)) end
wake_one(wake)
return 1
