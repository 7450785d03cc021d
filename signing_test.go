package taskqueue

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// testKey returns a 32-byte key that differs by seed.
func testKey(seed byte) []byte { return bytes.Repeat([]byte{seed}, MinSigningKeyBytes) }

// signing returns a signing config with the given key ids (keys testKey(id[0])), the first one active.
func signing(ids ...string) *SigningConfig {
	c := &SigningConfig{Keys: map[string][]byte{}, ActiveKeyID: ids[0]}
	for _, id := range ids {
		c.Keys[id] = testKey(id[len(id)-1])
	}
	return c
}

// recordingResolver counts the tasks it is asked to resolve: a worker must never resolve an unverified task.
type recordingResolver struct {
	resolved atomic.Int64
}

func (r *recordingResolver) Serialize(Executable) (SerializedTask, error) {
	return SerializedTask{}, ErrNotSerializable
}

func (r *recordingResolver) Resolve(SerializedTask) (Executable, error) {
	r.resolved.Add(1)
	return Func(func(context.Context) error { return nil }), nil
}

// recTask is a task for the recording resolver, already serialized.
func recTask(id string) *TaskSpec {
	return &TaskSpec{
		TaskID:         id,
		ResolverID:     "rec",
		SerializedTask: &SerializedTask{Strategy: "rec", Payload: []byte(`{"op":"pay","amount":10}`)},
		GroupID:        "g",
		MaxRetries:     3,
		Metadata:       map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
	}
}

// withQueue returns a queue sharing s's Redis and prefix, with its own config and a registry that has the
// recording resolver as "rec".
func (s *setup) withQueue(t *testing.T, cfg *RedisConfig) (*RedisTaskQueue, *recordingResolver) {
	t.Helper()
	reg, _ := testRegistry(t)
	rec := &recordingResolver{}
	require.NoError(t, reg.Register("rec", rec))
	q, err := NewRedisTaskQueue(s.rdb, s.q.KeyPrefix(), reg, quiet(cfg))
	require.NoError(t, err)
	return q, rec
}

func (s *setup) stored(t *testing.T, id string) string {
	t.Helper()
	raw, err := envelopeOf(context.Background(), s.q, id)
	require.NoError(t, err)
	return raw
}

func TestSigningRoundTrip(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	q, rec := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	require.NoError(t, q.Enqueue(ctx, recTask("t1")))

	raw := s.stored(t, "t1")
	require.Regexp(t, `,"sig":\{"alg":"HS256","kid":"k1","mac":"[A-Za-z0-9_-]{43}"\}\}$`, raw)
	env, err := decodeEnvelope([]byte(raw), Limits{}.withDefaults())
	require.NoError(t, err)
	require.Equal(t, "k1", env.Sig.KeyID)

	ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, int64(1), rec.resolved.Load())
	require.NoError(t, q.Ack(ctx, ds...))
}

// A signature covers only what retries and requeues do not rewrite, so it verifies after each of them, through
// the Lua scripts of a real Redis as well.
func TestSigningSurvivesRetryDeadLetterAndRequeue(t *testing.T) {
	t.Parallel()
	backends(t, nil, func(t *testing.T, s *setup) {
		ctx := context.Background()
		q, rec := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
		require.NoError(t, q.Enqueue(ctx, recTask("t1")))
		sig := strings.SplitAfter(s.stored(t, "t1"), `"sig":`)[1]

		lease := func() *Delivery {
			t.Helper()
			ds, err := q.Dequeue(ctx, DequeueOptions{Max: 1})
			require.NoError(t, err)
			require.Len(t, ds, 1, "the task verifies")
			return ds[0]
		}
		require.NoError(t, q.Retry(ctx, lease(), 0, errors.New("boom")))
		require.Contains(t, s.stored(t, "t1"), `"attempt":1`)
		d := lease()
		require.Equal(t, 1, d.Spec.Attempt)
		require.NoError(t, q.DeadLetter(ctx, d, errors.New("give up")))
		n, err := mustAdmin(q).RequeueDead(ctx, "t1")
		require.NoError(t, err)
		require.Equal(t, 1, n)
		require.True(t, strings.HasSuffix(s.stored(t, "t1"), sig), "the signature is written back as it was")
		d = lease()
		require.Equal(t, 0, d.Spec.Attempt)
		require.NoError(t, q.Ack(ctx, d))
		require.Equal(t, int64(3), rec.resolved.Load())
		require.Equal(t, Counts{}, s.counts(t))
	})
}

func TestSigningRefusesAndParks(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	producer, _ := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	require.NoError(t, producer.Enqueue(ctx, recTask("orig")))
	signed := s.stored(t, "orig")
	unsignedPart, _, found := strings.Cut(signed, `,"sig":`)
	require.True(t, found)
	tamper := func(raw, old, repl string) string {
		require.Contains(t, raw, old)
		return strings.Replace(raw, old, repl, 1)
	}
	require.NoError(t, s.rdb.Del(ctx, s.q.keys.key(keyTasks), s.q.keys.key(keyPending)).Err())
	// Another producer uses the id k1 with another key.
	impostor, _ := s.withQueue(t, &RedisConfig{Signing: &SigningConfig{Keys: map[string][]byte{"k1": testKey('x')}, ActiveKeyID: "k1"}})
	require.NoError(t, impostor.Enqueue(ctx, recTask("wrong-key")))
	unsigned, _ := s.withQueue(t, nil)
	require.NoError(t, unsigned.Enqueue(ctx, recTask("unsigned")))
	other, _ := s.withQueue(t, &RedisConfig{Signing: signing("k9")})
	require.NoError(t, other.Enqueue(ctx, recTask("unknown-kid")))

	cases := []struct {
		id, raw string // raw "" is the envelope already stored under id
		problem SignatureProblem
	}{
		{"unsigned", "", SignatureMissing},
		{"wrong-key", "", SignatureMismatch},
		{"unknown-kid", "", SignatureUnknownKey},
		{"payload", tamper(signed, `"amount":10`, `"amount":1000`), SignatureMismatch},
		{"resolver", tamper(signed, `"resolver_id":"rec"`, `"resolver_id":"default"`), SignatureMismatch},
		{"task-id", signed, SignatureMismatch}, // the same bytes under another id: the id is signed
		{"task-id-field", tamper(signed, `{"v":2,`, `{"v":2,"task_id":"task-id-field",`), SignatureMismatch},
		{"group", tamper(signed, `"group_id":"g"`, `"group_id":"h"`), SignatureMismatch},
		{"retries", tamper(signed, `"max_retries":3`, `"max_retries":-1`), SignatureMismatch},
		{"timeout", tamper(signed, `"max_retries":3`, `"max_retries":3,"timeout_ms":1`), SignatureMismatch},
		{"created", tamper(signed, `"created_at":`, `"created_at":1`), SignatureMismatch},
		{"meta", tamper(signed, `-01"}`, `-00"}`), SignatureMismatch},
		{"meta-added", tamper(signed, `"meta":{`, `"meta":{"a":"b",`), SignatureMismatch},
		{"kid-swapped", tamper(signed, `"kid":"k1"`, `"kid":"k2"`), SignatureMismatch},
		{"mac-flipped", flipMAC(signed), SignatureMismatch},
		{"sig-removed", unsignedPart + "}", SignatureMissing},
	}
	for i, c := range cases {
		if c.raw != "" {
			cases[i].raw = strings.Replace(c.raw, `"task_id":"orig"`, `"task_id":"`+c.id+`"`, 1)
			s.writeRaw(t, c.id, cases[i].raw)
		}
	}
	require.NoError(t, producer.Enqueue(ctx, recTask("good")))

	// The worker holds k1 and k2 (k2 active): rotation in progress.
	worker, rec := s.withQueue(t, &RedisConfig{Signing: signing("k2", "k1")})
	ds, err := worker.Dequeue(ctx, DequeueOptions{Max: 100})
	require.NoError(t, err)
	require.Equal(t, []string{"good"}, ids(ds), "only the verified task is returned")
	require.Equal(t, int64(1), rec.resolved.Load(), "no unverified task reaches the resolver")
	require.NoError(t, worker.Ack(ctx, ds...))

	require.Equal(t, Counts{Dead: int64(len(cases))}, s.counts(t), "parked, not dropped, not retried")
	for _, c := range cases {
		dl, err := deadLetterOf(ctx, s.q, c.id)
		require.NoError(t, err, c.id)
		require.Contains(t, dl.Reason, ErrSignature.Error(), c.id)
		require.Contains(t, dl.Reason, string(c.problem), c.id)
		if c.raw != "" {
			require.Equal(t, c.raw, dl.Envelope, "%s: parked with its raw bytes", c.id)
		}
	}
	dl, err := deadLetterOf(ctx, s.q, "unknown-kid")
	require.NoError(t, err)
	require.Contains(t, dl.Reason, `(key id "k9")`)
}

// flipMAC changes one bit of the MAC, keeping its encoding canonical.
func flipMAC(raw string) string {
	i := strings.Index(raw, `"mac":"`) + len(`"mac":"`)
	c := byte('A')
	if raw[i] == 'A' {
		c = 'B'
	}
	return raw[:i] + string(c) + raw[i+1:]
}

func TestSigningErrorsAreTyped(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	unsigned, _ := s.withQueue(t, nil)
	require.NoError(t, unsigned.Enqueue(ctx, recTask("t1")))
	worker, rec := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	_, _, err := worker.rehydrate("t1", s.stored(t, "t1"))
	require.ErrorIs(t, err, ErrSignature)
	var se *SignatureError
	require.ErrorAs(t, err, &se)
	require.Equal(t, SignatureMissing, se.Problem)
	require.Zero(t, rec.resolved.Load())
}

func TestSigningRotation(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	oldProducer, _ := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	newProducer, _ := s.withQueue(t, &RedisConfig{Signing: signing("k2", "k1")})
	require.NoError(t, oldProducer.Enqueue(ctx, recTask("by-k1")))
	require.NoError(t, newProducer.Enqueue(ctx, recTask("by-k2")))
	require.Contains(t, s.stored(t, "by-k2"), `"kid":"k2"`)
	require.NoError(t, oldProducer.Enqueue(ctx, recTask("late-k1")))

	// Step 1: workers hold both keys and accept both.
	both, _ := s.withQueue(t, &RedisConfig{Signing: signing("k1", "k2")})
	ds, err := both.Dequeue(ctx, DequeueOptions{Max: 2})
	require.NoError(t, err)
	require.Equal(t, []string{"by-k1", "by-k2"}, ids(ds))
	require.NoError(t, both.Ack(ctx, ds...))

	// Step 2: k1 removed; a task still signed with it is parked.
	onlyK2, rec := s.withQueue(t, &RedisConfig{Signing: signing("k2")})
	ds, err = onlyK2.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Empty(t, ds)
	require.Zero(t, rec.resolved.Load())
	dl, err := deadLetterOf(ctx, s.q, "late-k1")
	require.NoError(t, err)
	require.Contains(t, dl.Reason, string(SignatureUnknownKey))
}

func TestSigningAllowUnsigned(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	unsigned, _ := s.withQueue(t, nil)
	require.NoError(t, unsigned.Enqueue(ctx, recTask("plain")))
	require.NotContains(t, s.stored(t, "plain"), `"sig"`)
	cfg := signing("k1")
	cfg.AllowUnsigned = true
	worker, _ := s.withQueue(t, &RedisConfig{Signing: cfg})
	impostor, _ := s.withQueue(t, &RedisConfig{Signing: &SigningConfig{Keys: map[string][]byte{"k1": testKey('x')}, ActiveKeyID: "k1"}})
	require.NoError(t, impostor.Enqueue(ctx, recTask("forged")))

	ds, err := worker.Dequeue(ctx, DequeueOptions{Max: 10})
	require.NoError(t, err)
	require.Equal(t, []string{"plain"}, ids(ds), "unsigned accepted; a bad signature is still refused")
	require.NoError(t, worker.Ack(ctx, ds...))
	require.Equal(t, Counts{Dead: 1}, s.counts(t))
}

// A queue without signing neither signs nor checks: it reads signed envelopes (even with a MAC it cannot check)
// and keeps their signature when it rewrites them.
func TestSigningIgnoredWithoutKeys(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	impostor, _ := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	require.NoError(t, impostor.Enqueue(ctx, recTask("t1")))
	sig := strings.SplitAfter(s.stored(t, "t1"), `"sig":`)[1]
	plain, rec := s.withQueue(t, nil)
	ds, err := plain.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.Equal(t, int64(1), rec.resolved.Load())
	require.NoError(t, plain.Retry(ctx, ds[0], 0, errors.New("again")))
	require.True(t, strings.HasSuffix(s.stored(t, "t1"), sig))
}

// A malformed "sig" is a malformed envelope, with or without signing configured.
func TestSigningFieldIsDecodedStrictly(t *testing.T) {
	t.Parallel()
	mac := strings.Repeat("A", 43)
	with := func(sig string) string { return strings.TrimSuffix(validV1, "}") + `,"sig":` + sig + "}" }
	good := with(`{"alg":"HS256","kid":"k1","mac":"` + mac + `"}`)
	e, err := decodeEnvelope([]byte(good), Limits{}.withDefaults())
	require.NoError(t, err)
	require.Equal(t, &envSig{KeyID: "k1"}, e.Sig)
	out, err := e.marshal()
	require.NoError(t, err)
	require.Contains(t, string(out), `,"sig":{"alg":"HS256","kid":"k1","mac":"`+mac+`"}`)

	for name, sig := range map[string]string{
		"null":          `null`,
		"string":        `"k1:` + mac + `"`,
		"no alg":        `{"kid":"k1","mac":"` + mac + `"}`,
		"other alg":     `{"alg":"none","kid":"k1","mac":"` + mac + `"}`,
		"alg lowercase": `{"alg":"hs256","kid":"k1","mac":"` + mac + `"}`,
		"no kid":        `{"alg":"HS256","mac":"` + mac + `"}`,
		"empty kid":     `{"alg":"HS256","kid":"","mac":"` + mac + `"}`,
		"long kid":      `{"alg":"HS256","kid":"` + strings.Repeat("k", 65) + `","mac":"` + mac + `"}`,
		"bad kid":       `{"alg":"HS256","kid":"k 1","mac":"` + mac + `"}`,
		"escaped kid":   `{"alg":"HS256","kid":"k\u0031","mac":"` + mac + `"}`,
		"kid number":    `{"alg":"HS256","kid":1,"mac":"` + mac + `"}`,
		"no mac":        `{"alg":"HS256","kid":"k1"}`,
		"short mac":     `{"alg":"HS256","kid":"k1","mac":"` + mac[1:] + `"}`,
		"long mac":      `{"alg":"HS256","kid":"k1","mac":"` + mac + `A"}`,
		"padded mac":    `{"alg":"HS256","kid":"k1","mac":"` + mac + `="}`,
		"std base64":    `{"alg":"HS256","kid":"k1","mac":"` + mac[1:] + `+"}`,
		"trailing bits": `{"alg":"HS256","kid":"k1","mac":"` + mac[1:] + `B"}`,
		"extra key":     `{"alg":"HS256","kid":"k1","mac":"` + mac + `","x":"y"}`,
		"dup key":       `{"alg":"HS256","kid":"k1","kid":"k2","mac":"` + mac + `"}`,
		"case variant":  `{"alg":"HS256","KID":"k1","mac":"` + mac + `"}`,
	} {
		_, err := decodeEnvelope([]byte(with(sig)), Limits{}.withDefaults())
		require.ErrorIs(t, err, ErrMalformedEnvelope, name)
		require.Less(t, len(err.Error()), 300, name)
	}
	_, err = decodeEnvelope([]byte(strings.Replace(good, `"sig"`, `"SIG"`, 1)), Limits{}.withDefaults())
	require.ErrorIs(t, err, ErrMalformedEnvelope, "a case variant of sig at the top level")
}

func TestSigningConfigValidation(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	reg, _ := testRegistry(t)
	for name, c := range map[string]*SigningConfig{
		"no keys":        {ActiveKeyID: "k1"},
		"short key":      {Keys: map[string][]byte{"k1": make([]byte, 31)}, ActiveKeyID: "k1"},
		"long key":       {Keys: map[string][]byte{"k1": make([]byte, 1025)}, ActiveKeyID: "k1"},
		"bad id":         {Keys: map[string][]byte{"k/1": testKey(1)}, ActiveKeyID: "k/1"},
		"empty id":       {Keys: map[string][]byte{"": testKey(1)}, ActiveKeyID: ""},
		"dot first":      {Keys: map[string][]byte{".k": testKey(1)}, ActiveKeyID: ".k"},
		"long id":        {Keys: map[string][]byte{strings.Repeat("k", 65): testKey(1)}, ActiveKeyID: strings.Repeat("k", 65)},
		"no active":      {Keys: map[string][]byte{"k1": testKey(1)}},
		"missing active": {Keys: map[string][]byte{"k1": testKey(1)}, ActiveKeyID: "k2"},
	} {
		_, err := NewRedisTaskQueue(s.rdb, "test", reg, &RedisConfig{Signing: c})
		require.ErrorIs(t, err, ErrInvalidConfig, name)
		require.Contains(t, err.Error(), "Signing", name)
		for _, key := range c.Keys {
			if len(key) > 0 {
				require.NotContains(t, err.Error(), string(key), "%s: no key material in errors", name)
			}
		}
	}
	ok := &SigningConfig{Keys: map[string][]byte{"k1": testKey(1), "2024-06_b.x": testKey(2)}, ActiveKeyID: "2024-06_b.x"}
	_, err := NewRedisTaskQueue(s.rdb, "test", reg, &RedisConfig{Signing: ok})
	require.NoError(t, err)
}

// The queue copies the keys: changing the caller's slice afterwards changes nothing.
func TestSigningConfigIsCopied(t *testing.T) {
	t.Parallel()
	s := newMini(t, nil)
	ctx := context.Background()
	key := testKey('1')
	q, _ := s.withQueue(t, &RedisConfig{Signing: &SigningConfig{Keys: map[string][]byte{"k1": key}, ActiveKeyID: "k1"}})
	key[0] ^= 0xff
	require.NoError(t, q.Enqueue(ctx, recTask("t1")))
	worker, _ := s.withQueue(t, &RedisConfig{Signing: signing("k1")})
	ds, err := worker.Dequeue(ctx, DequeueOptions{Max: 1})
	require.NoError(t, err)
	require.Len(t, ds, 1)
	require.NoError(t, worker.Ack(ctx, ds...))
}

// The MAC is computed over the payload as stored (compacted), so white space in a producer's payload changes
// nothing, and each field is length-prefixed, so moving bytes from one field to the next changes the MAC.
func TestSigningMessageIsUnambiguous(t *testing.T) {
	t.Parallel()
	sg, err := newSigner(signing("k1"))
	require.NoError(t, err)
	base := func() *envelope {
		return &envelope{V: 1, TaskID: "t1", ResolverID: "ab", Strategy: "s", GroupID: "c",
			SerializedTask: SerializedTask{Strategy: "s", Payload: []byte(`{"a":"x y"}`)}}
	}
	e := base()
	sg.sign(e)
	spaced := base()
	spaced.SerializedTask.Payload = []byte("\n { \"a\" :\t\"x y\" }\r\n")
	spaced.Sig = e.Sig
	require.NoError(t, sg.verify(spaced), "white space outside strings is not signed")
	inString := base()
	inString.SerializedTask.Payload = []byte(`{"a":"xy"}`)
	inString.Sig = e.Sig
	require.ErrorIs(t, sg.verify(inString), ErrSignature, "white space inside strings is")
	shifted := base()
	shifted.ResolverID, shifted.GroupID = "a", "bc"
	shifted.Sig = e.Sig
	require.ErrorIs(t, sg.verify(shifted), ErrSignature)
	unsignedFields := base()
	unsignedFields.Status, unsignedFields.Attempt, unsignedFields.LastError, unsignedFields.FailedAt = StateDead, 7, "x", 5
	unsignedFields.Sig = e.Sig
	require.NoError(t, sg.verify(unsignedFields))
	empty, emptyObject := base(), base()
	empty.SerializedTask.Payload, emptyObject.SerializedTask.Payload = nil, []byte(`{}`)
	sg.sign(empty)
	emptyObject.Sig = empty.Sig
	require.NoError(t, sg.verify(emptyObject), "an empty payload is stored, and signed, as {}")
}

func TestLoadSigningKeysFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	k1, k2 := base64.StdEncoding.EncodeToString(testKey('1')), base64.StdEncoding.EncodeToString(testKey('2'))
	c, err := LoadSigningKeysFile(write("ok", "# rotation: k2 active, k1 still accepted\n\nk2 = "+k2+"\nk1="+k1+"\n"))
	require.NoError(t, err)
	require.Equal(t, "k2", c.ActiveKeyID)
	require.Equal(t, map[string][]byte{"k1": testKey('1'), "k2": testKey('2')}, c.Keys)

	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for name, text := range map[string]string{
		"empty":       "# nothing\n",
		"no equals":   "k1 " + k1 + "\n",
		"bad id":      "k 1=" + k1 + "\n",
		"bad base64":  "k1=" + k1[:10] + "!\n",
		"short key":   "k1=" + short + "\n",
		"duplicate":   "k1=" + k1 + "\nk1=" + k2 + "\n",
		"url base64?": "k1=" + strings.ReplaceAll(base64.URLEncoding.EncodeToString(append(testKey('1'), 0xfb, 0xff)), "=", "") + "\n",
	} {
		_, err := LoadSigningKeysFile(write(name, text))
		require.ErrorIs(t, err, ErrInvalidConfig, name)
		require.NotContains(t, err.Error(), k1[:20], "%s: no key material in errors", name)
	}
	_, err = LoadSigningKeysFile(filepath.Join(dir, "missing"))
	require.ErrorIs(t, err, ErrInvalidConfig)
}

func BenchmarkSigning(b *testing.B) {
	sg, err := newSigner(signing("k1"))
	require.NoError(b, err)
	e := benchEnvelope(b)
	b.Run("sign", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			sg.sign(e)
		}
	})
	sg.sign(e)
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := sg.verify(e); err != nil {
				b.Fatal(err)
			}
		}
	})
	raw, err := e.marshal()
	require.NoError(b, err)
	b.Run("decode+verify", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			env, err := decodeEnvelope(raw, Limits{}.withDefaults())
			if err != nil {
				b.Fatal(err)
			}
			if err := sg.verify(env); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decode-unsigned", func(b *testing.B) {
		u := *e
		u.Sig = nil
		raw, err := u.marshal()
		require.NoError(b, err)
		b.ReportAllocs()
		b.SetBytes(int64(len(raw)))
		for b.Loop() {
			if _, err := decodeEnvelope(raw, Limits{}.withDefaults()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// Every enqueue path signs: a group's members, dispatched on a signing queue, verify and run on a worker that
// accepts no unsigned task (they were once stored unsigned and parked as such).
func TestSigningCoversGroupMembers(t *testing.T) {
	t.Parallel()
	backends(t, &RedisConfig{Signing: signing("k1")}, func(t *testing.T, s *setup) {
		ctx := context.Background()
		registerSquare(t, s)
		run, err := s.q.DispatchGroup(ctx, "signed", squares(3), nil)
		require.NoError(t, err)
		require.Contains(t, s.stored(t, run.TaskIDs[0]), `"sig":{"alg":"HS256","kid":"k1"`)

		startWorker(t, s.q, quietWorker(WorkerConfig{Concurrency: 2}, nil))
		res, err := run.Wait(ctx, &WaitOptions{Timeout: 10 * time.Second})
		require.NoError(t, err)
		require.Equal(t, 3, res.Succeeded)
		st, err := countsOf(ctx, s.q)
		require.NoError(t, err)
		require.Zero(t, st.Dead)
	})
}
