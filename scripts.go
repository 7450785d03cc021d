package taskqueue

import (
	_ "embed"

	"github.com/redis/go-redis/v9"
)

// Every state change of a Redis queue is one of these scripts. Each receives the queue's whole key set as KEYS
// (in the order of the key* constants in keys.go, so KEYS[1] is tasks, KEYS[11] wake and KEYS[12] paused) and
// builds no key itself; each checks before it writes, since a Lua error does not roll back. The contract of each
// (ARGV and return value) is written above it in lua/*.lua. Script.Run sends EVALSHA and falls back to EVAL on
// NOSCRIPT. The operator's scripts (pause.lua, purge.lua) follow the same rules.
var (
	//go:embed lua/enqueue.lua
	enqueueSrc    string
	enqueueScript = redis.NewScript(enqueueSrc)

	//go:embed lua/dequeue.lua
	dequeueSrc    string
	dequeueScript = redis.NewScript(dequeueSrc)

	//go:embed lua/ack.lua
	ackSrc    string
	ackScript = redis.NewScript(ackSrc)

	//go:embed lua/settle.lua
	settleSrc    string
	settleScript = redis.NewScript(settleSrc)

	//go:embed lua/extend.lua
	extendSrc    string
	extendScript = redis.NewScript(extendSrc)

	//go:embed lua/reap.lua
	reapSrc    string
	reapScript = redis.NewScript(reapSrc)

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
