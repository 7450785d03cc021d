-- prelude: functions the scripts share; each script is sent with those it calls, above its own code (withPrelude,
-- scripts.go). Each takes the keys it touches as parameters, which every caller passes from the names it bound
-- from KEYS; none makes a Redis call that the code it replaced did not make.

-- now_ms(): the server clock (TIME) in ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- wake_one(wake): push one wake-up token to the wake list, which never holds more than 64 (a token carries no
-- task data: a consumer blocked on the list wakes and leases).
local function wake_one(wake)
  redis.call('LPUSH', wake, '1')
  redis.call('LTRIM', wake, 0, 63)
end
