package taskqueue

import (
	_ "embed"
	"regexp"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Every state change of a Redis queue is one of these scripts. Each receives every key it touches as KEYS and
// builds no key itself: most the queue's whole key set (in the order of the key* constants in keys.go, so KEYS[1]
// is tasks, KEYS[11] wake and KEYS[12] paused), enqueue, ack and extend only the keys they touch (keySet in
// keys.go, each script's header says which), a group run's or a result's keys as extra KEYS after those (see
// group_delivery.go); each binds its keys to names at its top, and checks before it writes, since a Lua error does
// not roll back. The contract of each (KEYS, ARGV and return value) is written above it in lua/*.lua. Script.Run
// sends EVALSHA and falls back to EVAL on NOSCRIPT. The operator's scripts (pause.lua, purge.lua) follow the same
// rules.
//
// Each script is sent as the functions of the prelude that it calls (lua/prelude.lua, lua/group.lua, then
// lua/levels.lua, then lua/flow.lua: the
// logic that several scripts share, each function taking the keys it touches as parameters) followed by its own
// file: see withPrelude. The *Src variables hold the scripts exactly as they are sent.
var (
	//go:embed lua/prelude.lua
	preludeLua string
	//go:embed lua/group.lua
	groupLua string
	//go:embed lua/levels.lua
	levelsLua string
	//go:embed lua/workflow.lua
	workflowLua string
	//go:embed lua/flow.lua
	flowLua string
	//go:embed lua/enqueue_flow.lua
	enqueueFlowLua string
	//go:embed lua/dequeue_flow.lua
	dequeueFlowLua string
	//go:embed lua/workflow_submit.lua
	workflowSubmitLua string
	//go:embed lua/workflow_cancel.lua
	workflowCancelLua string

	//go:embed lua/enqueue.lua
	enqueueLua string
	//go:embed lua/enqueue_levels.lua
	enqueueLevelsLua string
	//go:embed lua/dequeue.lua
	dequeueLua string
	//go:embed lua/dispatch.lua
	dispatchLua string
	//go:embed lua/ack.lua
	ackLua string
	//go:embed lua/settle.lua
	settleLua string
	//go:embed lua/extend.lua
	extendLua string
	//go:embed lua/reap.lua
	reapLua string
	//go:embed lua/dead.lua
	deadLua string
	//go:embed lua/pause.lua
	pauseLua string
	//go:embed lua/purge.lua
	purgeLua string

	//go:embed lua/schedule_put.lua
	schedulePutLua string
	//go:embed lua/schedule_due.lua
	scheduleDueLua string
	//go:embed lua/schedule_advance.lua
	scheduleAdvanceLua string
	//go:embed lua/schedule_ctl.lua
	scheduleCtlLua string
)

var (
	enqueueSrc       = withPrelude(enqueueLua)
	dequeueSrc       = withPrelude(dequeueLua)
	enqueueLevelsSrc = withPrelude(enqueueLevelsLua)
	dispatchSrc      = withPrelude(dispatchLua)
	ackSrc           = withPrelude(ackLua)
	settleSrc        = withPrelude(settleLua)
	extendSrc        = withPrelude(extendLua)
	reapSrc          = withPrelude(reapLua)
	deadSrc          = withPrelude(deadLua)
	pauseSrc         = withPrelude(pauseLua)
	purgeSrc         = withPrelude(purgeLua)

	schedulePutSrc     = withPrelude(schedulePutLua)
	scheduleDueSrc     = withPrelude(scheduleDueLua)
	scheduleAdvanceSrc = withPrelude(scheduleAdvanceLua)
	scheduleCtlSrc     = withPrelude(scheduleCtlLua)

	enqueueScript       = redis.NewScript(enqueueSrc)
	dequeueScript       = redis.NewScript(dequeueSrc)
	enqueueLevelsScript = redis.NewScript(enqueueLevelsSrc)
	dispatchScript      = redis.NewScript(dispatchSrc)
	ackScript           = redis.NewScript(ackSrc)
	settleScript        = redis.NewScript(settleSrc)
	extendScript        = redis.NewScript(extendSrc)
	reapScript          = redis.NewScript(reapSrc)
	deadScript          = redis.NewScript(deadSrc)
	pauseScript         = redis.NewScript(pauseSrc)
	purgeScript         = redis.NewScript(purgeSrc)

	schedulePutScript     = redis.NewScript(schedulePutSrc)
	scheduleDueScript     = redis.NewScript(scheduleDueSrc)
	scheduleAdvanceScript = redis.NewScript(scheduleAdvanceSrc)
	scheduleCtlScript     = redis.NewScript(scheduleCtlSrc)

	workflowSubmitSrc    = withPrelude(workflowSubmitLua)
	workflowCancelSrc    = withPrelude(workflowCancelLua)
	workflowSubmitScript = redis.NewScript(workflowSubmitSrc)
	workflowCancelScript = redis.NewScript(workflowCancelSrc)

	enqueueFlowSrc    = withPrelude(enqueueFlowLua)
	enqueueFlowScript = redis.NewScript(enqueueFlowSrc)
	dequeueFlowSrc    = withPrelude(dequeueFlowLua)
	dequeueFlowScript = redis.NewScript(dequeueFlowSrc)
)

// luaFunc is one function of the prelude: its name and its text (the comment lines right above it, its
// "local function name(" line and every line down to its "end" line, at the start of a line).
type luaFunc struct{ name, text string }

var (
	preludeFuncs = splitPrelude(preludeLua + workflowLua + groupLua + uniqueLua + levelsLua + flowLua)
	luaFuncRe    = regexp.MustCompile(`^local function ([A-Za-z_]\w*)\(`)
)

// splitPrelude splits the prelude into its functions, in order. Text outside them (a file's header, blank lines)
// is left out.
func splitPrelude(src string) []luaFunc {
	var fns []luaFunc
	var comment, body strings.Builder
	name := ""
	for line := range strings.Lines(src) {
		switch {
		case name != "":
			body.WriteString(line)
			if strings.TrimRight(line, "\n") == "end" {
				fns = append(fns, luaFunc{name, body.String()})
				name = ""
				body.Reset()
			}
		case strings.HasPrefix(line, "--"):
			comment.WriteString(line)
		case luaFuncRe.MatchString(line):
			name = luaFuncRe.FindStringSubmatch(line)[1]
			body.WriteString(comment.String())
			body.WriteString(line)
			comment.Reset()
		default:
			comment.Reset()
		}
	}
	return fns
}

// withPrelude returns a script's source preceded by the functions of the prelude that it calls, directly or
// through another one, in the prelude's order (a function is defined above those that call it). A script carries
// no function it does not call: defining one costs a closure on every call of the script.
func withPrelude(src string) string {
	need := make([]bool, len(preludeFuncs))
	code := luaCode(src)
	// From the last function to the first: a function calls only functions defined above it.
	for i := len(preludeFuncs) - 1; i >= 0; i-- {
		f := preludeFuncs[i]
		if regexp.MustCompile(`(?:^|[^\w.])` + f.name + `\(`).MatchString(code) {
			need[i] = true
			code += luaCode(f.text)
		}
	}
	var b strings.Builder
	for i, f := range preludeFuncs {
		if need[i] {
			b.WriteString(f.text)
		}
	}
	b.WriteString(src)
	return b.String()
}

// luaCode returns Lua source without its "--" comments (our scripts hold no string containing "--").
func luaCode(src string) string {
	var b strings.Builder
	for line := range strings.Lines(src) {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i] + "\n"
		}
		b.WriteString(line)
	}
	return b.String()
}
