package taskqueue

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// keyless lists the commands our scripts run that take no key.
var keyless = map[string]bool{"TIME": true}

// channelOfKey lists commands whose argument is a pub/sub channel, not a key: a classic PUBLISH reaches every node
// of a cluster, whatever the slot. A script of ours names a channel after one of its keys (a key from KEYS, a
// suffix in quotes), so that it stays under the queue's hash tag, where the worker ACL's &{prefix}:* allows it.
var channelOfKey = map[string]bool{"PUBLISH": true}

// channelRe is a channel named after a key: a name or KEYS[i], then .. and a quoted suffix.
var channelRe = regexp.MustCompile(`^(KEYS\[[^\[\]]+\]|[A-Za-z_]\w*)\s*\.\.\s*'[^']*'$`)

var (
	redisCallRe = regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'\s*(?:,\s*([^,)]+))?`)
	keysRefRe   = regexp.MustCompile(`^KEYS\[[^\[\]]+\]$`) // KEYS[1], or KEYS[g + 1] with an index from ARGV
	funcDefRe   = regexp.MustCompile(`local function ([A-Za-z_]\w*)\(([^)]*)\)`)
	anyCallRe   = regexp.MustCompile(`redis\.[a-z_]*call\b`)
)

// TestClusterScriptsTakeKeysOnlyFromKEYS reads every Lua script and checks that each key a command touches comes
// from KEYS: directly as KEYS[i], or through a name bound only to keys (a local assigned KEYS[i], alone or in a
// list, or a parameter of a local function that every call passes a key; see isKey). A key built in Lua (by
// concatenation, or taken from ARGV) would be refused by Cluster proxies and could land in another slot. Every
// command that takes keys takes one (the key argument is its first), so checking the first argument covers them
// all; multi-key commands are refused outright.
func TestClusterScriptsTakeKeysOnlyFromKEYS(t *testing.T) {
	t.Parallel()
	// The scripts exactly as they are sent (the prelude functions each calls, then its own file).
	sent := map[string]string{
		"enqueue": enqueueSrc, "dequeue": dequeueSrc, "dispatch": dispatchSrc, "ack": ackSrc, "settle": settleSrc,
		"extend": extendSrc, "reap": reapSrc, "cancel": cancelSrc, "dead": deadSrc, "pause": pauseSrc, "purge": purgeSrc,
		"enqueue_levels": enqueueLevelsSrc, "enqueue_flow": enqueueFlowSrc, "limits": limitsSrc, "dequeue_flow": dequeueFlowSrc,
		"schedule_put": schedulePutSrc, "schedule_due": scheduleDueSrc, "schedule_advance": scheduleAdvanceSrc, "schedule_ctl": scheduleCtlSrc,
		"unique_enqueue": uniqueEnqueueSrc, "unique_release": uniqueReleaseSrc,
	}
	sent["workflow_submit"], sent["workflow_cancel"] = workflowSubmitSrc, workflowCancelSrc
	for name, src := range sent {
		problems := scriptKeyProblems(src)
		require.Empty(t, problems, "the %s script builds or passes keys outside KEYS", name)
	}
	// Every file under lua/ is part of a script checked above: a script's own file whole, a prelude file (whose
	// code is all in its functions) by each of its functions.
	files, err := filepath.Glob("lua/*.lua")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	in := func(part string) bool {
		return slices.ContainsFunc(slices.Collect(maps.Values(sent)), func(s string) bool { return strings.Contains(s, part) })
	}
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		if f != "lua/prelude.lua" && f != "lua/group.lua" && f != "lua/unique.lua" && f != "lua/levels.lua" && f != "lua/workflow.lua" && f != "lua/flow.lua" {
			require.True(t, in(string(src)), "%s is not in the list of scripts this test checks", f)
			continue
		}
		rest := string(src)
		for _, fn := range splitPrelude(string(src)) {
			require.True(t, in(fn.text), "%s: no script calls %s", f, fn.name)
			rest = strings.Replace(rest, fn.text, "", 1)
		}
		require.Empty(t, strings.TrimSpace(luaCode(rest)), "%s holds code outside its functions", f)
	}
	require.Len(t, preludeFuncs, len(splitPrelude(preludeLua))+len(splitPrelude(workflowLua))+len(splitPrelude(groupLua))+
		len(splitPrelude(uniqueLua))+len(splitPrelude(levelsLua))+len(splitPrelude(flowLua)))
}

// scriptKeyProblems returns each command of a Lua script whose key does not come from KEYS.
func scriptKeyProblems(src string) []string {
	var problems []string
	code := luaCode(src)
	if n, m := len(anyCallRe.FindAllString(code, -1)), len(redisCallRe.FindAllString(code, -1)); n != m {
		problems = append(problems, "a redis.call whose command is not a literal")
	}
	for _, m := range redisCallRe.FindAllStringSubmatch(code, -1) {
		cmd, arg := strings.ToUpper(m[1]), strings.TrimSpace(m[2])
		switch {
		case keyless[cmd]:
			if arg != "" {
				problems = append(problems, cmd+" takes no argument here")
			}
		case multiKey[cmd]:
			problems = append(problems, cmd+" takes several keys")
		case channelOfKey[cmd]:
			if m := channelRe.FindStringSubmatch(arg); len(m) < 2 || !isKey(code, m[1], map[string]bool{}) {
				problems = append(problems, cmd+" on a channel not named after a key: "+arg)
			}
		case isKey(code, arg, map[string]bool{}):
		default:
			problems = append(problems, cmd+" "+arg)
		}
	}
	return problems
}

// multiKey lists commands that take several keys, which a script of ours must not use: their extra keys would
// escape the first-argument check.
var multiKey = map[string]bool{
	"MGET": true, "MSET": true, "RPOPLPUSH": true, "LMOVE": true, "SMOVE": true, "RENAME": true,
	"ZUNIONSTORE": true, "ZINTERSTORE": true, "SUNIONSTORE": true, "SINTERSTORE": true, "SDIFFSTORE": true,
	"BLPOP": true, "BRPOP": true, "EVAL": true, "EVALSHA": true, "COPY": true,
}

var (
	nameRe = regexp.MustCompile(`^[A-Za-z_]\w*$`)
	// assignRe finds an assignment: a list of names, then "=" (group 2), its values being the rest of the line
	// (a script writes a statement on one line).
	assignRe = regexp.MustCompile(`(?m)(?:^|[^=~<>.\w,])[ \t]*((?:[A-Za-z_]\w*[ \t]*,[ \t]*)*[A-Za-z_]\w*)[ \t]*(=)(?:[^=]|$)`)
	// keyValueRe is a value that passes a key on: KEYS[i] or a name, ending its statement or its list item.
	keyValueRe = regexp.MustCompile(`^\s*(KEYS\[[^\[\]]+\]|[A-Za-z_]\w*)\s*(?:$|;|else\b|end\b)`)
	forInRe    = regexp.MustCompile(`\bfor\s+([A-Za-z_][\w\s,]*?)\s+in\b`)
	anyFuncRe  = regexp.MustCompile(`\bfunction\b\s*([\w.:]*)\s*\(([^)]*)\)`)
)

// isKey reports whether expr, a command's key or a value that a script passes on as one, comes from KEYS: it is
// KEYS[i] (i may come from ARGV), or a name bound only to keys: every assignment to it (alone or in a list, as in
// "local tasks, pending = KEYS[1], KEYS[2]") assigns KEYS[i] or such a name, and every local function with a
// parameter of that name receives one there from each of its calls (one call at least). A name bound any other
// way (a generic for, a function that is not a local one) is refused. Names are matched without scopes, so a name
// must be a key wherever it is bound. seen holds the names being checked further up; each counts as a key there,
// its other bindings deciding.
func isKey(code, expr string, seen map[string]bool) bool {
	expr = strings.TrimSpace(expr)
	if keysRefRe.MatchString(expr) {
		return true
	}
	if !nameRe.MatchString(expr) {
		return false
	}
	if seen[expr] {
		return true
	}
	seen[expr] = true
	defer delete(seen, expr)
	if boundOtherwise(code, expr) {
		return false
	}
	assigned, aok := assignedKeys(code, expr, seen)
	passed, pok := passedKeys(code, expr, seen)
	return aok && pok && (assigned || passed)
}

// assignedKeys reports whether name is assigned anywhere (found), and whether every value assigned to it is a key.
// A field of a table constructor ({dead = 2}) assigns no variable.
func assignedKeys(code, name string, seen map[string]bool) (found, ok bool) {
	for _, m := range assignRe.FindAllStringSubmatchIndex(code, -1) {
		pos := slices.IndexFunc(strings.Split(code[m[2]:m[3]], ","), func(n string) bool { return strings.TrimSpace(n) == name })
		if pos < 0 {
			continue
		}
		if strings.Count(code[:m[2]], "{") > strings.Count(code[:m[2]], "}") {
			continue // a field of a table constructor, not a variable
		}
		found = true
		line := code[m[5]:]
		if i := strings.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		}
		values := luaCallArgs(line)
		if pos >= len(values) {
			return true, false
		}
		v := keyValueRe.FindStringSubmatch(values[pos])
		if len(v) < 2 || !isKey(code, v[1], seen) {
			return true, false
		}
	}
	return found, true
}

// passedKeys reports whether name is a parameter of a local function (found), and whether every call of each such
// function passes a key in that position (one call at least).
func passedKeys(code, name string, seen map[string]bool) (found, ok bool) {
	for _, def := range funcDefRe.FindAllStringSubmatch(code, -1) {
		pos := slices.IndexFunc(strings.Split(def[2], ","), func(p string) bool { return strings.TrimSpace(p) == name })
		if pos < 0 {
			continue
		}
		found = true
		calls := regexp.MustCompile(`(?:^|[^\w.])`+def[1]+`\(`).FindAllStringIndex(code, -1)
		n := 0
		for _, c := range calls {
			if strings.Contains(code[max(c[0]-16, 0):c[1]], "function "+def[1]) {
				continue // the definition itself
			}
			args := luaCallArgs(code[c[1]:])
			if pos >= len(args) || !isKey(code, args[pos], seen) {
				return true, false
			}
			n++
		}
		if n == 0 {
			return true, false
		}
	}
	return found, true
}

// boundOtherwise reports whether name is bound by a generic for or is a parameter of a function that is not a
// local one (an anonymous function, a table's method): bindings the checks above do not follow.
func boundOtherwise(code, name string) bool {
	is := func(list string) bool {
		return slices.ContainsFunc(strings.Split(list, ","), func(n string) bool { return strings.TrimSpace(n) == name })
	}
	for _, m := range forInRe.FindAllStringSubmatch(code, -1) {
		if is(m[1]) {
			return true
		}
	}
	for _, m := range anyFuncRe.FindAllStringSubmatchIndex(code, -1) {
		local := nameRe.MatchString(code[m[2]:m[3]]) && strings.HasSuffix(strings.TrimRight(code[:m[0]], " \t"), "local")
		if !local && is(code[m[4]:m[5]]) {
			return true
		}
	}
	return false
}

// luaCallArgs splits the arguments of a call whose text starts right after its opening parenthesis (or a list of
// values), at the commas outside brackets and quotes, up to the first unopened closing bracket.
func luaCallArgs(s string) []string {
	var args []string
	depth, start := 0, 0
	var quote rune
	escaped := false
	for i, r := range s {
		switch {
		case quote != 0:
			switch {
			case escaped:
				escaped = false
			case r == '\\':
				escaped = true
			case r == quote:
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '(' || r == '[' || r == '{':
			depth++
		case r == ')' || r == ']' || r == '}':
			if depth == 0 {
				return append(args, s[start:i])
			}
			depth--
		case r == ',' && depth == 0:
			args = append(args, s[start:i])
			start = i + 1
		}
	}
	return append(args, s[start:])
}

// The check itself must catch what it is for: a key built by concatenation, a key from ARGV, a variable assigned
// something other than KEYS, a multi-key command and a command named by a variable.
func TestClusterScriptKeyCheckCatchesBuiltKeys(t *testing.T) {
	t.Parallel()
	for _, src := range []string{
		"redis.call('GET', KEYS[1] .. ':x')",
		"redis.call('HGET', ARGV[1], 'f')",
		"local k = KEYS[1]\nk = 'q:' .. ARGV[1]\nredis.call('LLEN', k)",
		"local k = KEYS[1] .. 'x'\nredis.call('LLEN', k)",
		"redis.call('RPOPLPUSH', KEYS[2], KEYS[3])",
		"local c = 'GET'\nredis.call(c, KEYS[1])",
		"redis.pcall('SET', '{q}:x', 1)",
		"local function f(k, v)\n  redis.call('SET', k, v)\nend\nf(KEYS[1], 1)\nf('{q}:' .. ARGV[1], 2)",
		"local function f(k)\n  redis.call('GET', k)\nend",
		// Names bound in a list, passed on, or bound where the check does not follow them.
		"local a, k = KEYS[1], ARGV[1]\nredis.call('GET', k)",
		"local k, a = KEYS[1] .. 'x', KEYS[2]\nredis.call('GET', k)",
		"local a, k = KEYS[1]\nredis.call('GET', k)",
		"local a, b, k = 'x,', KEYS[1], ARGV[1]\nredis.call('GET', k)",
		"local j = KEYS[1]\nlocal k = j\nk = j .. 'x'\nredis.call('GET', k)",
		"local k = KEYS[1]\nlocal function f(k)\n  redis.call('GET', k)\nend\nf('{q}:x')",
		"local function f(k)\n  redis.call('GET', k)\nend\nlocal function g(j)\n  f(j)\nend\ng(ARGV[1])",
		"local k = KEYS[1]\nfor _, k in ipairs(ARGV) do redis.call('GET', k) end",
		"local k = KEYS[1]\nlocal f = function(k) redis.call('GET', k) end\nf(ARGV[1])",
		"local k = KEYS[1]\nif ARGV[1] then k = KEYS[2] else k = ARGV[2] end\nredis.call('GET', k)",
		"local t = {k = KEYS[1]}\nlocal k = ARGV[1]\nredis.call('GET', k)",
	} {
		require.NotEmpty(t, scriptKeyProblems(src), src)
	}
	require.Empty(t, scriptKeyProblems("local function f(k, v)\n  redis.call('SET', k, v)\nend\nf(KEYS[1], 1)\nf(KEYS[g + 1], 2)"))
	require.Empty(t, scriptKeyProblems("local a, b = KEYS[1], KEYS[2]\nlocal g = tonumber(ARGV[1])\nlocal c = KEYS[g]\nlocal function f(k, v)\n"+
		"  redis.call('SET', k, v)\nend\nlocal function g(k, j)\n  f(k, 1)\n  f(j, 2)\nend\n"+
		"g(a, c)\ng(b, KEYS[3])\nredis.call('GET', c)"))
	require.Empty(t, scriptKeyProblems("local o = ({k = 1, j = 2})[ARGV[1]]\nlocal k, j = KEYS[1], KEYS[2]\nredis.call('GET', k)"))
	require.Empty(t, scriptKeyProblems("local k\nif ARGV[1] then k = KEYS[1] else k = KEYS[2] end\nredis.call('GET', k)"))
	require.Empty(t, scriptKeyProblems("local t = redis.call('TIME')\nlocal key\nkey = KEYS[2]\nredis.call('LPOP', key, 3) -- KEYS only"))
}
