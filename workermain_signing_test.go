package taskqueue

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// writeKeysFile writes a keys file with the given ids (keys testKey(id's last byte)), the first one active.
func writeKeysFile(t *testing.T, ids ...string) string {
	t.Helper()
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(id + "=" + base64.StdEncoding.EncodeToString(testKey(id[len(id)-1])) + "\n")
	}
	p := filepath.Join(t.TempDir(), "keys")
	require.NoError(t, os.WriteFile(p, []byte(b.String()), 0o600))
	return p
}

func TestWorkerMainParseSigning(t *testing.T) {
	t.Parallel()
	file := writeKeysFile(t, "k2", "k1")
	c, err := ParseWorkerMainConfig(nil, nil)
	require.NoError(t, err)
	require.Nil(t, c.Signing, "no signing by default")

	c, err = ParseWorkerMainConfig([]string{"--signing-keys-file", file}, nil)
	require.NoError(t, err)
	require.Equal(t, signing("k2", "k1"), c.Signing)

	c, err = ParseWorkerMainConfig(nil, envMap("TASKQUEUE_SIGNING_KEYS_FILE", file, "TASKQUEUE_SIGNING_ALLOW_UNSIGNED", "true"))
	require.NoError(t, err)
	require.Equal(t, "k2", c.Signing.ActiveKeyID)
	require.True(t, c.Signing.AllowUnsigned)

	for name, args := range map[string][]string{
		"missing file":          {"--signing-keys-file", filepath.Join(t.TempDir(), "none")},
		"allow without keys":    {"--signing-allow-unsigned"},
		"allow not a bool":      {"--signing-keys-file", file, "--signing-allow-unsigned=maybe"},
		"short key in the file": {"--signing-keys-file", writeShortKeysFile(t)},
	} {
		_, err := ParseWorkerMainConfig(args, nil)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
		require.Contains(t, err.Error(), "signing", name)
	}
	var b bytes.Buffer
	WriteWorkerMainUsage(&b, "w")
	require.Contains(t, b.String(), "  --signing-keys-file FILE  ($TASKQUEUE_SIGNING_KEYS_FILE)\n")
}

func writeShortKeysFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "short")
	require.NoError(t, os.WriteFile(p, []byte("k1="+base64.StdEncoding.EncodeToString(make([]byte, 8))+"\n"), 0o600))
	return p
}

// A worker binary with a keys file runs signed tasks and parks unsigned ones without resolving them.
func TestWorkerMainSigningParksUnsigned(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	reg, ref := testRegistry(t)
	ran := make(chan string, 2)
	require.NoError(t, Register(ref, "m", "f", func(_ context.Context, a struct {
		ID string `json:"id"`
	}) error {
		ran <- a.ID
		return nil
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	keys := writeKeysFile(t, "k1")
	go func() {
		env := envMap("REDIS_URL", miniURL(mr), "TASKQUEUE_LOG_LEVEL", "error", "TASKQUEUE_SIGNING_KEYS_FILE", keys)
		done <- runWorkerMain(ctx, reg, []string{"--key-prefix", "signed", "--shutdown-grace", "2s"}, env, io.Discard)
	}()

	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	preg, _ := testRegistry(t)
	plain, err := NewRedisTaskQueue(rdb, "signed", preg, quiet(nil))
	require.NoError(t, err)
	signed, err := NewRedisTaskQueue(rdb, "signed", preg, quiet(&RedisConfig{Signing: signing("k1")}))
	require.NoError(t, err)
	require.NoError(t, plain.Enqueue(ctx, NewTaskSpec("unsigned", Ref("m", "f", map[string]string{"id": "unsigned"}))))
	require.NoError(t, signed.Enqueue(ctx, NewTaskSpec("signed", Ref("m", "f", map[string]string{"id": "signed"}))))

	select {
	case got := <-ran:
		require.Equal(t, "signed", got)
	case err := <-done:
		t.Fatalf("the worker returned before running the task: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for the worker to run the signed task")
	}
	require.Eventually(t, func() bool {
		dl, err := deadLetterOf(ctx, plain, "unsigned")
		return err == nil && strings.Contains(dl.Reason, string(SignatureMissing))
	}, 10*time.Second, 10*time.Millisecond)
	cancel()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the worker did not return after its context was cancelled")
	}
	require.Empty(t, ran, "the unsigned task never ran")
}
