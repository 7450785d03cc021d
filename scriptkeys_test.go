package taskqueue

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// keyless lists the commands our scripts run that take no key.
var keyless = map[string]bool{"TIME": true}

var (
	redisCallRe = regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z]+)'\s*(?:,\s*([^,)]+))?`)
	keysRefRe   = regexp.MustCompile(`^KEYS\[[^\[\]]+\]$`) // KEYS[1], or KEYS[g + 1] with an index from ARGV
	funcDefRe   = regexp.MustCompile(`local function ([A-Za-z_]\w*)\(([^)]*)\)`)
	anyCallRe   = regexp.MustCompile(`redis\.[a-z_]*call\b`)
)

// TestClusterScriptsTakeKeysOnlyFromKEYS reads every Lua script and checks that each key a command touches comes
// from KEYS: directly as KEYS[i], or through a local variable that is only ever assigned KEYS[i]. A key built in
// Lua (by concatenation, or taken from ARGV) would be refused by Cluster proxies and could land in another slot.
// Every command that takes keys takes one (the key argument is its first), so checking the first argument covers
// them all; multi-key commands are refused outright.
func TestClusterScriptsTakeKeysOnlyFromKEYS(t *testing.T) {
	t.Parallel()
	// The scripts exactly as they are sent (group.lua is prepended to those that finish tasks).
	sent := map[string]string{
		"enqueue": enqueueSrc, "dequeue": dequeueSrc, "dispatch": dispatchSrc, "ack": groupSrc + ackSrc,
		"settle": groupSrc + settleSrc, "extend": extendSrc, "reap": groupSrc + reapSrc, "dead": deadSrc,
		"pause": pauseSrc, "purge": purgeSrc,
	}
	for name, src := range sent {
		problems := scriptKeyProblems(src)
		require.Empty(t, problems, "the %s script builds or passes keys outside KEYS", name)
	}
	// Every file under lua/ is part of a script checked above.
	files, err := filepath.Glob("lua/*.lua")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		found := false
		for _, s := range sent {
			found = found || strings.Contains(s, string(src))
		}
		require.True(t, found, "%s is not in the list of scripts this test checks", f)
	}
}

// scriptKeyProblems returns each command of a Lua script whose key does not come from KEYS.
func scriptKeyProblems(src string) []string {
	var problems []string
	code := stripLuaComments(src)
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
		case keysRefRe.MatchString(arg):
		case isKeysAlias(code, arg):
		case isKeysParam(code, arg):
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

// isKeysAlias reports whether name is a local variable that the script only ever assigns KEYS[i].
func isKeysAlias(code, name string) bool {
	if !regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`).MatchString(name) {
		return false
	}
	lhs := `(?m)(?:^|[^=~<>.\w])` + name + `\s*=\s*`
	all := regexp.MustCompile(lhs+`[^=]`).FindAllStringIndex(code, -1)
	clean := regexp.MustCompile(lhs+`KEYS\[\d+\][ \t]*(?:$|;|else\b|end\b)`).FindAllStringIndex(code, -1)
	return len(all) > 0 && len(all) == len(clean)
}

// isKeysParam reports whether name is a parameter of a local function that every call of that function passes
// KEYS[...] in that position (group.lua's group_done takes the keys of a group run this way).
func isKeysParam(code, name string) bool {
	for _, def := range funcDefRe.FindAllStringSubmatch(code, -1) {
		pos := -1
		for i, p := range strings.Split(def[2], ",") {
			if strings.TrimSpace(p) == name {
				pos = i
			}
		}
		if pos < 0 {
			continue
		}
		calls := regexp.MustCompile(`(?:^|[^\w.])`+def[1]+`\(`).FindAllStringIndex(code, -1)
		n := 0
		for _, c := range calls {
			args := luaCallArgs(code[c[1]:])
			if strings.HasPrefix(code[max(c[0], 0):c[1]], "function") || strings.Contains(code[max(c[0]-16, 0):c[1]], "function "+def[1]) {
				continue // the definition itself
			}
			if pos >= len(args) || !keysRefRe.MatchString(strings.TrimSpace(args[pos])) {
				return false
			}
			n++
		}
		return n > 0
	}
	return false
}

// luaCallArgs splits the arguments of a call whose text starts right after its opening parenthesis.
func luaCallArgs(s string) []string {
	var args []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(', '[', '{':
			depth++
		case ')', ']', '}':
			if depth == 0 {
				return append(args, s[start:i])
			}
			depth--
		case ',':
			if depth == 0 {
				args = append(args, s[start:i])
				start = i + 1
			}
		}
	}
	return append(args, s[start:])
}

// stripLuaComments removes "--" comments (the scripts hold no string containing "--").
func stripLuaComments(src string) string {
	var b strings.Builder
	for line := range strings.Lines(src) {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i] + "\n"
		}
		b.WriteString(line)
	}
	return b.String()
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
	} {
		require.NotEmpty(t, scriptKeyProblems(src), src)
	}
	require.Empty(t, scriptKeyProblems("local function f(k, v)\n  redis.call('SET', k, v)\nend\nf(KEYS[1], 1)\nf(KEYS[g + 1], 2)"))
	require.Empty(t, scriptKeyProblems("local t = redis.call('TIME')\nlocal key\nkey = KEYS[2]\nredis.call('LPOP', key, 3) -- KEYS only"))
}
