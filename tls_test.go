package taskqueue

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/graflow-go/taskqueue/internal/redistest"
)

// testPKI is a CA and a server certificate made by the test, written as PEM files to a temporary directory.
type testPKI struct {
	dir                       string
	caFile, certFile, keyFile string
	// otherCAFile is a second, unrelated CA: trusting it instead of caFile must fail verification.
	otherCAFile string
	// clientCertFile and clientKeyFile are a client certificate signed by the CA.
	clientCertFile, clientKeyFile string
}

// tlsServerName is the DNS name in the server certificate, besides 127.0.0.1 and localhost.
const tlsServerName = "redis.taskqueue.test"

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	p := &testPKI{dir: dir}
	now := time.Now()

	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		return k
	}
	serial := func() *big.Int {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
		require.NoError(t, err)
		return n
	}
	writePEM := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	writeKey := func(name string, k *ecdsa.PrivateKey) string {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		require.NoError(t, err)
		return writePEM(name, "PRIVATE KEY", der)
	}
	newCA := func(cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: cn},
			NotBefore:             now.Add(-time.Minute),
			NotAfter:              now.Add(time.Hour),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		require.NoError(t, err)
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		return c, k, der
	}
	leaf := func(cn string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage, ips []net.IP, dns []string) ([]byte, *ecdsa.PrivateKey) {
		k := newKey()
		tmpl := &x509.Certificate{
			SerialNumber: serial(),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Minute),
			NotAfter:     now.Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  ips,
			DNSNames:     dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		require.NoError(t, err)
		return der, k
	}

	ca, caKey, caDER := newCA("taskqueue test CA")
	p.caFile = writePEM("ca.pem", "CERTIFICATE", caDER)
	_, _, otherDER := newCA("some other CA")
	p.otherCAFile = writePEM("other-ca.pem", "CERTIFICATE", otherDER)

	srvDER, srvKey := leaf("redis", ca, caKey, x509.ExtKeyUsageServerAuth, []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost", tlsServerName})
	p.certFile = writePEM("server.pem", "CERTIFICATE", srvDER)
	p.keyFile = writeKey("server-key.pem", srvKey)

	cliDER, cliKey := leaf("worker", ca, caKey, x509.ExtKeyUsageClientAuth, nil, nil)
	p.clientCertFile = writePEM("client.pem", "CERTIFICATE", cliDER)
	p.clientKeyFile = writeKey("client-key.pem", cliKey)
	return p
}

// startTLSRedis starts a redis-server that listens only for TLS on a free loopback port (--port 0 turns the
// plaintext listener off) and returns that address. authClients is the server's tls-auth-clients setting.
func startTLSRedis(t *testing.T, p *testPKI, authClients string) string {
	t.Helper()
	redistest.Need(t)
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: "127.0.0.1", RootCAs: p.pool(t, p.caFile)}
	if authClients == "yes" {
		pair, err := tls.LoadX509KeyPair(p.clientCertFile, p.clientKeyFile)
		require.NoError(t, err)
		tlsCfg.Certificates = []tls.Certificate{pair}
	}
	srv, err := redistest.Start(redistest.Options{Dir: p.dir, TLS: tlsCfg, Timeout: 5 * time.Second,
		Args: append([]string{"--tls-cert-file", p.certFile, "--tls-key-file", p.keyFile, "--tls-ca-cert-file", p.caFile,
			"--tls-auth-clients", authClients}, redistest.NoPersistence...)})
	if err != nil {
		if errors.Is(err, redistest.ErrExited) && strings.Contains(strings.ToLower(err.Error()), "tls") &&
			os.Getenv("CI") == "" {
			t.Skipf("SKIPPING TLS test: this redis-server has no TLS support: %v", err)
		}
		t.Fatalf("TLS redis-server: %v", err)
	}
	t.Cleanup(srv.Kill)
	return srv.Addr
}

func (p *testPKI) pool(t *testing.T, file string) *x509.CertPool {
	t.Helper()
	b, err := os.ReadFile(file)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(b))
	return pool
}

// tlsClientFromFlags builds a client the way a worker binary does: flags through ParseWorkerMainConfig, then its
// Redis options. Retries (of commands and of dials) are off and timeouts short, so that every failure is quick and bounded.
func tlsClientFromFlags(t *testing.T, args ...string) *redis.Client {
	t.Helper()
	c, err := ParseWorkerMainConfig(args, nil)
	require.NoError(t, err)
	opts := *c.Redis
	opts.MaxRetries, opts.DialerRetries = -1, 1
	opts.DialTimeout, opts.ReadTimeout, opts.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	rdb := redis.NewClient(&opts)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// pingWithin pings and fails the test if the answer (success or error) takes longer than the client's own
// timeouts allow (dial, which covers the TLS handshake, then write and read; the tests turn retries off), with a
// second of slack: no failure mode may hang.
func pingWithin(t *testing.T, rdb *redis.Client) error {
	t.Helper()
	o := rdb.Options()
	limit := o.DialTimeout + o.WriteTimeout + o.ReadTimeout + time.Second
	start := time.Now()
	err := rdb.Ping(context.Background()).Err()
	require.Less(t, time.Since(start), limit, "the ping took too long: a failure must end by a timeout, not hang")
	return err
}

// runTLSLifecycle enqueues, dequeues, runs and acks one task over rdb.
func runTLSLifecycle(t *testing.T, rdb *redis.Client) {
	t.Helper()
	ctx := context.Background()
	reg, ref := testRegistry(t)
	ran := make(chan int64, 1)
	require.NoError(t, Register(ref, "math", "add", func(_ context.Context, a addArgs) error {
		ran <- a.A + a.B
		return nil
	}))
	q, err := NewRedisTaskQueue(rdb, "tls-"+newID()[:6], reg, quiet(nil))
	require.NoError(t, err)
	require.NoError(t, q.Enqueue(ctx, NewTaskSpec("tls-1", Ref("math", "add", addArgs{A: 2, B: 40}))))
	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1, Wait: time.Second})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, "tls-1", ds[0].Spec.TaskID)
	require.NoError(t, ds[0].Spec.Executable.Run(ctx))
	require.Equal(t, int64(42), <-ran)
	require.NoError(t, q.Ack(ctx, ds...))
	st, err := countsOf(ctx, q)
	require.NoError(t, err)
	require.Equal(t, Counts{}, st)
}

func TestTLSRedis(t *testing.T) {
	p := newTestPKI(t)
	addr := startTLSRedis(t, p, "no")
	_, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	url := "rediss://" + addr + "/0"

	t.Run("right CA and IP connect, lifecycle works", func(t *testing.T) {
		rdb := tlsClientFromFlags(t, "--redis-url", url, "--tls-ca", p.caFile)
		require.NoError(t, pingWithin(t, rdb))
		runTLSLifecycle(t, rdb)
	})
	t.Run("right CA and server name connect", func(t *testing.T) {
		rdb := tlsClientFromFlags(t, "--redis-url", url, "--tls-ca", p.caFile, "--tls-server-name", tlsServerName)
		require.NoError(t, pingWithin(t, rdb))
		runTLSLifecycle(t, rdb)
	})
	t.Run("host and port flags with the CA turn TLS on", func(t *testing.T) {
		rdb := tlsClientFromFlags(t, "--redis-host", "localhost", "--redis-port", port, "--tls-ca", p.caFile)
		require.NoError(t, pingWithin(t, rdb))
	})
	t.Run("plain go-redis options with the CA connect", func(t *testing.T) {
		rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1,
			TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, ServerName: tlsServerName, RootCAs: p.pool(t, p.caFile)}})
		defer rdb.Close()
		require.NoError(t, pingWithin(t, rdb))
		runTLSLifecycle(t, rdb)
	})

	t.Run("wrong CA fails with an unknown-authority error", func(t *testing.T) {
		for _, rdb := range []*redis.Client{
			tlsClientFromFlags(t, "--redis-url", url, "--tls-ca", p.otherCAFile),
			tlsClientFromFlags(t, "--redis-url", url), // the system pool does not know the test CA either
		} {
			err := pingWithin(t, rdb)
			require.Error(t, err)
			var ua x509.UnknownAuthorityError
			require.ErrorAs(t, err, &ua, "want x509.UnknownAuthorityError, got %T: %v", err, err)
			require.Contains(t, err.Error(), "certificate signed by unknown authority")
		}
	})
	t.Run("wrong server name fails with a hostname error", func(t *testing.T) {
		rdb := tlsClientFromFlags(t, "--redis-url", url, "--tls-ca", p.caFile, "--tls-server-name", "evil.example.com")
		err := pingWithin(t, rdb)
		require.Error(t, err)
		var he x509.HostnameError
		require.ErrorAs(t, err, &he, "want x509.HostnameError, got %T: %v", err, err)
		require.Equal(t, "evil.example.com", he.Host)
		require.Contains(t, err.Error(), "evil.example.com")
		var ua x509.UnknownAuthorityError
		require.NotErrorAs(t, err, &ua, "a name error is not an authority error")
	})
	t.Run("plaintext to the TLS port fails quickly", func(t *testing.T) {
		rdb := tlsClientFromFlags(t, "--redis-url", "redis://"+addr+"/0")
		err := pingWithin(t, rdb)
		require.Error(t, err)
		var ua x509.UnknownAuthorityError
		var he x509.HostnameError
		require.False(t, errors.As(err, &ua) || errors.As(err, &he), "not a certificate error: %v", err)
		require.ErrorIs(t, err, io.EOF, "the TLS port drops a connection that does not start with a handshake")
		t.Logf("plaintext to the TLS port: %v", err)

		// The worker binary turns it into a start-up error that says what to check.
		reg, _ := testRegistry(t)
		c, perr := ParseWorkerMainConfig([]string{"--redis-url", "redis://" + addr + "/0?max_retries=-1&dial_timeout=2s&read_timeout=2s"}, nil)
		require.NoError(t, perr)
		c.Logger = slog.New(slog.DiscardHandler)
		start := time.Now()
		err = c.Run(context.Background(), reg)
		// Within its client's timeouts (dial 2s, then read and write 2s each) and a second: not a hang.
		require.Less(t, time.Since(start), 7*time.Second)
		require.ErrorContains(t, err, "cannot reach Redis at "+addr)
		require.ErrorContains(t, err, "rediss://")
	})
	t.Run("TLS to a plaintext port fails at the dial timeout", func(t *testing.T) {
		// A plaintext Redis reads the ClientHello as the start of an inline command and waits for its end: the
		// handshake gets no answer, so only the dial timeout (2s here, 5s by default) ends it.
		plain := realRedis(t)
		rdb := tlsClientFromFlags(t, "--redis-url", "rediss://"+plain+"/0", "--tls-ca", p.caFile)
		err := pingWithin(t, rdb)
		require.Error(t, err)
		var ne net.Error
		require.True(t, errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()),
			"want a timeout, got %T: %v", err, err)
	})
	t.Run("skipping verification needs the explicit opt-in", func(t *testing.T) {
		// Without the opt-in, an unknown CA is refused (above); with it, the same connection succeeds.
		rdb := tlsClientFromFlags(t, "--redis-url", url, "--tls-insecure-skip-verify")
		require.NoError(t, pingWithin(t, rdb))

		c, err := ParseWorkerMainConfig([]string{"--redis-url", url}, nil)
		require.NoError(t, err)
		require.False(t, c.Redis.TLSConfig.InsecureSkipVerify, "verification is on by default")
		c, err = ParseWorkerMainConfig([]string{"--redis-url", url}, envMap("TASKQUEUE_TLS_INSECURE_SKIP_VERIFY", "true"))
		require.NoError(t, err)
		require.True(t, c.Redis.TLSConfig.InsecureSkipVerify)

		// The worker warns loudly when it connects that way.
		var logs strings.Builder
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		reg, _ := testRegistry(t)
		require.NoError(t, c.Run(ctx, reg))
		require.Contains(t, logs.String(), "level=WARN")
		require.Contains(t, logs.String(), "TLS CERTIFICATE VERIFICATION IS OFF")
	})
}

func TestTLSRedisClientCertificate(t *testing.T) {
	p := newTestPKI(t)
	addr := startTLSRedis(t, p, "yes")
	url := "rediss://" + addr + "/0"

	rdb := tlsClientFromFlags(t, "--redis-url", url, "--tls-ca", p.caFile, "--tls-cert", p.clientCertFile, "--tls-key", p.clientKeyFile)
	require.NoError(t, pingWithin(t, rdb))
	runTLSLifecycle(t, rdb)

	// Without a client certificate the server refuses the handshake.
	rdb = tlsClientFromFlags(t, "--redis-url", url, "--tls-ca", p.caFile)
	require.ErrorContains(t, pingWithin(t, rdb), "certificate required")
}
