-- workflow: advance a workflow when one of its nodes completes. Part of the prelude: sent in each script that
-- calls group_done (group.lua), which calls workflow_step for a run whose hash has the field "wf" (a workflow,
-- workflow.go). A workflow is a group run whose members (nodes) have parents: its hash holds, besides the group's
-- fields, per node task id "e:<id>" its envelope while it waits for its parents, "n:<id>" how many of its parents
-- have not completed, "c:<id>" its children (space-separated, each prefixed by its edge's policy: "s" stop,
-- "c" continue, "i" ignore) and "k:<id>" the first parent that failed on a stop edge. A node's outcome "m:<id>" is
-- "" (not completed), "1" .. result (succeeded), "0" .. reason (failed), "2" .. parent (skipped: that parent
-- failed or was skipped on a stop edge) or "3" .. reason (cancelled before it started).

-- workflow_advance(gk, tasks, pending, wake, id, ok): the node id of the workflow gk completed (ok: succeeded);
-- count it off in each child's parents. A child whose last parent this was is decided here: skipped when a parent
-- failed on a stop edge (its own children are then counted off the same way), else released: its envelope moves
-- from gk to tasks and its id to the tail of pending (one RPUSH for all, a wake-up when pending was empty). A child
-- decided before (cancelled) is left alone. Returns how many nodes it skipped.
local function workflow_advance(gk, tasks, pending, wake, id, ok)
  local ready, skipped = {}, 0
  local todo = {id, ok}
  while #todo > 0 do
    local fine = table.remove(todo)
    local cur = table.remove(todo)
    local kids = redis.call('HGET', gk, 'c:' .. cur)
    for pol, child in string.gmatch(kids or '', '(%a)(%S+)') do
      if not fine and pol == 's' then redis.call('HSETNX', gk, 'k:' .. child, cur) end
      if redis.call('HINCRBY', gk, 'n:' .. child, -1) == 0 then
        local st = redis.call('HMGET', gk, 'm:' .. child, 'e:' .. child, 'k:' .. child)
        if st[1] == '' and st[2] then
          redis.call('HDEL', gk, 'e:' .. child)
          if st[3] then
            redis.call('HSET', gk, 'm:' .. child, '2' .. st[3])
            skipped = skipped + 1
            todo[#todo + 1] = child
            todo[#todo + 1] = false
          else
            redis.call('HSET', tasks, child, st[2])
            ready[#ready + 1] = child
          end
        end
      end
    end
  end
  for i = 1, #ready, 1000 do
    local part = {unpack(ready, i, math.min(i + 999, #ready))}
    if redis.call('RPUSH', pending, unpack(part)) == #part then wake_one(wake) end
  end
  return skipped
end

-- workflow_done(gk, wk, id, outcome, total, ttl): group_done for a node of a workflow, whose outcome is new:
-- records it, advances the workflow (workflow_advance), refreshes the TTL of gk, and when every node has completed
-- records the end (field "ended", ms, server clock) and pushes one wake-up to wk. The workflow's tasks, pending and
-- wake keys are the three KEYS after gk and wk (runKeys, group_delivery.go): every caller passes a run's keys that
-- way; a call without them fails before it writes.
local function workflow_done(gk, wk, id, outcome, total, ttl)
  local g = 0
  for i = 1, #KEYS - 4 do
    if KEYS[i] == gk and KEYS[i + 1] == wk then
      g = i
      break
    end
  end
  if g == 0 then error('taskqueue: the keys of workflow ' .. gk .. ' were not passed') end
  local tasks, pending, wake = KEYS[g + 2], KEYS[g + 3], KEYS[g + 4]
  redis.call('HSET', gk, 'm:' .. id, outcome)
  local skipped = workflow_advance(gk, tasks, pending, wake, id, string.sub(outcome, 1, 1) == '1')
  local done = redis.call('HINCRBY', gk, 'done', 1 + skipped)
  redis.call('PEXPIRE', gk, ttl)
  if done == tonumber(total) then
    redis.call('HSET', gk, 'ended', now_ms())
    redis.call('LPUSH', wk, '1')
    redis.call('PEXPIRE', wk, ttl)
  end
end
