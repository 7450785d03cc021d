-- workflow_submit: create a workflow and enqueue its roots, all or nothing; idempotent by the workflow's id.
-- KEYS[1] = the workflow's hash ({prefix}:group:<group id>), KEYS[2] its done list, KEYS[3] tasks, KEYS[4]
-- pending, KEYS[5] wake (runKeys, group_delivery.go).
-- ARGV[1] = workflow id; ARGV[2] = TTL of its keys in ms; ARGV[3] = number of nodes n; ARGV[4] = the graph (JSON,
-- kept for inspection and to tell a repeated submit from a different one); then per node i (0-based) five values:
-- ARGV[5+5i] = task id, ARGV[6+5i] = envelope, ARGV[7+5i] = number of parents, ARGV[8+5i] = children ("c:" of
-- workflow.lua, "" for none), ARGV[9+5i] = parents on an "ignore" edge (space-separated, "" for none).
-- The hash gets the group fields (name, total, done, ttl, created; group.lua), "wf" = "1", "state" = "running",
-- "graph", and per node "m:<id>" = "" and, for a node with parents, "e:<id>" and "n:<id>" (workflow.lua). Roots go
-- to tasks and to the tail of pending, in node order.
-- Returns {1} created; {0} the workflow exists with the same graph (nothing written); {3} it exists with another
-- graph; {2, id} a node's task id exists already as a task (nothing written).
local gk, wk, tasks, pending, wake = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n, ttl = tonumber(ARGV[3]), ARGV[2]
local graph = redis.call('HGET', gk, 'graph')
if graph then
  if graph == ARGV[4] then return {0} end
  return {3}
end
if redis.call('EXISTS', gk) == 1 then return {3} end
for i = 0, n - 1 do
  local id = ARGV[5 + 5 * i]
  if redis.call('HEXISTS', tasks, id) == 1 then return {2, id} end
end
-- HSET in parts: unpack takes at most a few thousand values.
local function hset_all(key, fields)
  for i = 1, #fields, 1000 do
    redis.call('HSET', key, unpack(fields, i, math.min(i + 999, #fields)))
  end
end
local fields = {'name', ARGV[1], 'total', n, 'done', 0, 'ttl', ttl, 'created', now_ms(), 'wf', '1',
  'state', 'running', 'graph', ARGV[4]}
local roots, envs = {}, {}
for i = 0, n - 1 do
  local b = 5 + 5 * i
  local id, parents = ARGV[b], tonumber(ARGV[b + 2])
  fields[#fields + 1] = 'm:' .. id
  fields[#fields + 1] = ''
  if parents == 0 then
    roots[#roots + 1] = id
    envs[#envs + 1] = id
    envs[#envs + 1] = ARGV[b + 1]
  else
    fields[#fields + 1] = 'e:' .. id
    fields[#fields + 1] = ARGV[b + 1]
    fields[#fields + 1] = 'n:' .. id
    fields[#fields + 1] = parents
  end
  if ARGV[b + 3] ~= '' then
    fields[#fields + 1] = 'c:' .. id
    fields[#fields + 1] = ARGV[b + 3]
  end
  if ARGV[b + 4] ~= '' then
    fields[#fields + 1] = 'i:' .. id
    fields[#fields + 1] = ARGV[b + 4]
  end
end
hset_all(gk, fields)
redis.call('PEXPIRE', gk, ttl)
hset_all(tasks, envs)
for i = 1, #roots, 1000 do
  local part = {unpack(roots, i, math.min(i + 999, #roots))}
  if redis.call('RPUSH', pending, unpack(part)) == #part then wake_one(wake) end
end
return {1}
