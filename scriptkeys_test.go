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
	keysRefRe   = regexp.MustCompile(`^KEYS\[\d+\]$`)
	anyCallRe   = regexp.MustCompile(`redis\.[a-z_]*call\b`)
)

// TestClusterScriptsTakeKeysOnlyFromKEYS reads every Lua script and checks that each key a command touches comes
// from KEYS: directly as KEYS[i], or through a local variable that is only ever assigned KEYS[i]. A key built in
// Lua (by concatenation, or taken from ARGV) would be refused by Cluster proxies and could land in another slot.
// Every command that takes keys takes one (the key argument is its first), so checking the first argument covers
// them all; multi-key commands are refused outright.
func TestClusterScriptsTakeKeysOnlyFromKEYS(t *testing.T) {
	t.Parallel()
	files, err := filepath.Glob("lua/*.lua")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	for _, f := range files {
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		problems := scriptKeyProblems(string(src))
		require.Empty(t, problems, "%s builds or passes keys outside KEYS", f)
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
	} {
		require.NotEmpty(t, scriptKeyProblems(src), src)
	}
	require.Empty(t, scriptKeyProblems("local t = redis.call('TIME')\nlocal key\nkey = KEYS[2]\nredis.call('LPOP', key, 3) -- KEYS only"))
}
