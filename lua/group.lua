-- group: record one member's outcome in its group run. Part of the prelude: sent in each script that calls it.
-- group_done(gk, wk, id, outcome): gk is the run's hash ({prefix}:group:<group id>), wk its done list; outcome is
-- "1" .. result (succeeded) or "0" .. reason (failed). The first outcome of a member counts, later ones are
-- ignored (a redelivered member that completes twice counts once). Nothing is written when gk is gone (waited
-- for and cleaned up, or expired) or id is not a member, so a late completion never creates a key. The member
-- that completes the run pushes one wake-up to wk. Every write refreshes the run's TTL (the hash's "ttl" field).
-- A workflow's run (field "wf") records it and advances in workflow_done (workflow.lua).
local function group_done(gk, wk, id, outcome)
  local m = redis.call('HMGET', gk, 'm:' .. id, 'total', 'ttl', 'wf')
  if m[1] ~= '' then return end
  if m[4] then return workflow_done(gk, wk, id, outcome, m[2], m[3]) end
  redis.call('HSET', gk, 'm:' .. id, outcome)
  local done = redis.call('HINCRBY', gk, 'done', 1)
  redis.call('PEXPIRE', gk, m[3])
  if done == tonumber(m[2]) then
    redis.call('LPUSH', wk, '1')
    redis.call('PEXPIRE', wk, m[3])
  end
end
