package taskqueue

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// readmeBlocks returns the ```go blocks of README.md under the given heading, in order.
func readmeBlocks(t *testing.T, heading string) []string {
	t.Helper()
	raw, err := os.ReadFile("README.md")
	require.NoError(t, err)
	text := string(raw)
	start := strings.Index(text, "\n## "+heading+"\n")
	require.GreaterOrEqual(t, start, 0, "README has a section %q", heading)
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	var blocks []string
	for _, m := range regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(section, -1) {
		blocks = append(blocks, m[1])
	}
	require.NotEmpty(t, blocks, "README's section %q has a Go block", heading)
	return blocks
}

// The README's producer-and-worker code compiles as written, in a new module that requires this one: what a new
// user pastes works (with the imports a Go editor adds).
func TestReadmeQuickstartCompilesInANewModule(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module of its own")
	}
	t.Parallel()
	block := readmeBlocks(t, "A producer and a worker")[0]
	src := `package main

import (
	"context"
	"fmt"
	"time"

	"github.com/graflow-go/taskqueue"
	"github.com/redis/go-redis/v9"
)

` + block + `
func main() { _ = run }
`
	repo, err := filepath.Abs(".")
	require.NoError(t, err)
	goMod, err := os.ReadFile("go.mod")
	require.NoError(t, err)
	redisReq := regexp.MustCompile(`(?m)^\s*github\.com/redis/go-redis/v9 (v\S+)`).FindStringSubmatch(string(goMod))
	require.NotNil(t, redisReq, "go.mod requires go-redis")
	dir := t.TempDir()
	mod := "module example.com/newuser\n\ngo 1.26.0\n\nrequire (\n\tgithub.com/graflow-go/taskqueue v0.0.0\n\tgithub.com/redis/go-redis/v9 " +
		redisReq[1] + "\n)\n\nreplace github.com/graflow-go/taskqueue => " + repo + "\n"
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.mod"), []byte(mod), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644))
	sum, err := os.ReadFile("go.sum") // the same versions, already in the module cache
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go.sum"), sum, 0o644))
	cmd := exec.Command("go", "build", "-mod=mod", "-o", os.DevNull, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "the README's code does not build in a new module:\n%s", out)
}
