package taskqueue

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// Every state change of a Redis queue is one of these scripts. Each receives every key it touches as KEYS and
// builds no key itself: most the queue's whole key set (in the order of the key* constants in keys.go, so KEYS[1]
// is tasks, KEYS[11] wake and KEYS[12] paused), enqueue, ack and extend only the keys they touch (keySet in
// keys.go, each script's header says which), a group run's or a result's keys as extra KEYS after those (see
// group_delivery.go); each checks before it writes, since a Lua error does not roll back. The contract of each
// (ARGV and return value) is written above it in lua/*.lua. Script.Run sends EVALSHA and falls back to EVAL on
// NOSCRIPT. The operator's scripts (pause.lua, purge.lua) follow the same rules.
var (
	//go:embed lua/enqueue.lua
	enqueueSrc    string
	enqueueScript = redis.NewScript(enqueueSrc)

	//go:embed lua/dequeue.lua
	dequeueSrc    string
	dequeueScript = redis.NewScript(dequeueSrc)

	// group.lua defines group_done, the completion of a group member, for the scripts that finish tasks.
	//go:embed lua/group.lua
	groupSrc string

	//go:embed lua/dispatch.lua
	dispatchSrc    string
	dispatchScript = redis.NewScript(dispatchSrc)

	//go:embed lua/ack.lua
	ackSrc    string
	ackScript = redis.NewScript(groupSrc + ackSrc)

	//go:embed lua/settle.lua
	settleSrc    string
	settleScript = redis.NewScript(groupSrc + settleSrc)

	//go:embed lua/extend.lua
	extendSrc    string
	extendScript = redis.NewScript(extendSrc)

	//go:embed lua/reap.lua
	reapSrc    string
	reapScript = redis.NewScript(groupSrc + reapSrc)

	//go:embed lua/dead.lua
	deadSrc    string
	deadScript = redis.NewScript(deadSrc)

	//go:embed lua/pause.lua
	pauseSrc    string
	pauseScript = redis.NewScript(pauseSrc)

	//go:embed lua/purge.lua
	purgeSrc    string
	purgeScript = redis.NewScript(purgeSrc)
)
