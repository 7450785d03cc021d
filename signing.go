package taskqueue

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
)

// Signing limits and names; see [SigningConfig] and docs/security.md.
const (
	// SignatureAlgorithm is the only "alg" of an envelope's "sig" field: HMAC-SHA256.
	SignatureAlgorithm = "HS256"
	// MinSigningKeyBytes is the shortest secret key accepted: 32 bytes, the size of an HMAC-SHA256 output.
	MinSigningKeyBytes = 32
	// MaxSigningKeyBytes is the longest secret key accepted.
	MaxSigningKeyBytes = 1024
	// MaxSigningKeyIDLen is the longest key id accepted, in configuration and in an envelope.
	MaxSigningKeyIDLen = 64
)

// signatureDomain starts every signed message, so that a MAC made for this purpose is never valid for another
// one; "v1" names the message layout of [signer.mac].
const signatureDomain = "taskqueue-sig-v1\x00"

// SigningConfig turns on envelope signing for a [RedisTaskQueue] ([RedisConfig.Signing]): Enqueue signs every
// envelope with the active key (HMAC-SHA256), and Dequeue verifies each envelope before anything else reads it.
// A task that is unsigned (unless AllowUnsigned), signed with a key id not in Keys, or whose MAC does not match is
// parked with a [*SignatureError] (wrapping [ErrSignature]): dead-lettered with the reason, never resolved, never
// run, never retried.
//
// Keys rotate by id: give every worker both the old and the new key, then switch the producers' ActiveKeyID to
// the new one, and remove the old key once no task signed with it is left.
type SigningConfig struct {
	// Keys maps key ids to secret keys. Ids are 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or
	// digit; keys are 32 to 1024 bytes (use random bytes, such as 32 from crypto/rand). At least one key.
	Keys map[string][]byte
	// ActiveKeyID is the id, in Keys, of the key that Enqueue signs with.
	ActiveKeyID string
	// AllowUnsigned accepts envelopes that carry no signature at all, while signing is being rolled out on a queue
	// that still holds unsigned tasks. A signed envelope is always verified. Default false: unsigned is refused.
	AllowUnsigned bool
}

// signer signs and verifies envelopes with the keys of a validated [SigningConfig].
type signer struct {
	active        *signingKey
	keys          map[string]*signingKey
	allowUnsigned bool
}

// signingKey is one key: a pool of HMAC states keyed with it, since building one costs more than using it.
type signingKey struct {
	id   string
	pool sync.Pool // of *macState
}

type macState struct {
	h   hash.Hash
	buf []byte
}

// newSigner validates and copies c; nil c is no signing.
func newSigner(c *SigningConfig) (*signer, error) {
	if c == nil {
		return nil, nil
	}
	if len(c.Keys) == 0 {
		return nil, fmt.Errorf("%w: Signing.Keys is empty", ErrInvalidConfig)
	}
	s := &signer{keys: make(map[string]*signingKey, len(c.Keys)), allowUnsigned: c.AllowUnsigned}
	for id, key := range c.Keys {
		if !validKeyID(id) {
			return nil, fmt.Errorf("%w: Signing.Keys: key id %s is not 1 to %d letters, digits, '.', '_' or '-' starting with a letter or digit",
				ErrInvalidConfig, quote(id), MaxSigningKeyIDLen)
		}
		if len(key) < MinSigningKeyBytes || len(key) > MaxSigningKeyBytes {
			return nil, fmt.Errorf("%w: Signing.Keys: key %s is %d bytes, want %d to %d",
				ErrInvalidConfig, quote(id), len(key), MinSigningKeyBytes, MaxSigningKeyBytes)
		}
		s.keys[id] = newSigningKey(id, key)
	}
	s.active = s.keys[c.ActiveKeyID]
	if s.active == nil {
		return nil, fmt.Errorf("%w: Signing.ActiveKeyID %s is not in Signing.Keys", ErrInvalidConfig, quote(c.ActiveKeyID))
	}
	return s, nil
}

func newSigningKey(id string, key []byte) *signingKey {
	key = bytes.Clone(key) // the caller may reuse its slice
	k := &signingKey{id: id}
	k.pool.New = func() any { return &macState{h: hmac.New(sha256.New, key), buf: make([]byte, 0, 256)} }
	return k
}

// sign sets e's signature, made with the active key.
func (s *signer) sign(e *envelope) {
	sig := &envSig{KeyID: s.active.id}
	s.active.mac(e, &sig.MAC)
	e.Sig = sig
}

// verify checks e's signature before anything resolves it. The comparison takes constant time.
func (s *signer) verify(e *envelope) error {
	if e.Sig == nil {
		if s.allowUnsigned {
			return nil
		}
		return &SignatureError{Problem: SignatureMissing}
	}
	k := s.keys[e.Sig.KeyID]
	if k == nil {
		return &SignatureError{Problem: SignatureUnknownKey, KeyID: e.Sig.KeyID}
	}
	var want [sha256.Size]byte
	k.mac(e, &want)
	if !hmac.Equal(want[:], e.Sig.MAC[:]) {
		return &SignatureError{Problem: SignatureMismatch, KeyID: e.Sig.KeyID}
	}
	return nil
}

// mac computes the MAC of e's signed fields into out. The message is the domain string, then each field in a
// fixed order, strings length-prefixed and numbers as 8 big-endian bytes, so no two envelopes share a message;
// the payload comes last, compacted as the encoder stores it. Fields that a retry or a requeue rewrites (status,
// attempt, last_error, failed_at), unknown fields and the signature itself are not covered.
func (k *signingKey) mac(e *envelope, out *[sha256.Size]byte) {
	st, _ := k.pool.Get().(*macState)
	b := st.buf[:0]
	b = append(b, signatureDomain...)
	b = appendField(b, k.id)
	b = appendUint64(b, uint64(int64(e.V)))
	b = appendField(b, e.TaskID)
	b = appendUint64(b, math.Float64bits(e.CreatedAt))
	b = appendField(b, e.Strategy)
	b = appendField(b, e.ResolverID)
	b = appendField(b, e.SerializedTask.Strategy)
	b = appendField(b, e.GroupID)
	b = appendUint64(b, uint64(int64(e.MaxRetries)))
	b = appendUint64(b, uint64(e.TimeoutMS))
	b = appendSignedMeta(b, e.Meta)
	st.h.Reset()
	st.h.Write(b)
	writeCompact(st.h, e.SerializedTask.Payload)
	copy(out[:], st.h.Sum(b[:0])) // into the pooled buffer: out would escape to the heap
	if cap(b) <= 4096 {
		st.buf = b // keep the grown buffer, within reason
	}
	k.pool.Put(st)
}

func appendUint64(b []byte, n uint64) []byte { return binary.BigEndian.AppendUint64(b, n) }

func appendField(b []byte, s string) []byte {
	return append(appendUint64(b, uint64(len(s))), s...)
}

// appendSignedMeta appends the entry count, then each key and value, keys sorted.
func appendSignedMeta(b []byte, m map[string]string) []byte {
	var buf [MaxMetadataEntries]string
	keys := buf[:0]
	for k := range m {
		if len(keys) == MaxMetadataEntries { // the decoder and the encoder refuse more
			break
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = appendUint64(b, uint64(len(m)))
	for _, k := range keys {
		b = appendField(appendField(b, k), m[k])
	}
	return b
}

// writeCompact writes valid JSON to h without the white space between its tokens, as appendCompact stores it,
// so that the MAC of a payload is the same before and after it is stored. An empty payload is stored as {}.
func writeCompact(h hash.Hash, raw []byte) {
	if len(raw) == 0 {
		h.Write([]byte("{}"))
		return
	}
	compactRuns(raw, func(run []byte) { h.Write(run) })
}

// LoadSigningKeysFile reads a keys file for [SigningConfig]: one key per line as "<key id>=<key in standard
// base64>", blank lines and lines starting with '#' ignored. The first key is the active one. Errors wrap
// [ErrInvalidConfig], name the line, and never show a key.
func LoadSigningKeysFile(path string) (*SigningConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: signing keys file: %v", ErrInvalidConfig, err)
	}
	c := &SigningConfig{Keys: map[string][]byte{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		id, enc, ok := strings.Cut(line, "=")
		id, enc = strings.TrimSpace(id), strings.TrimSpace(enc)
		if !ok || !validKeyID(id) {
			return nil, fmt.Errorf("%w: signing keys file, line %d: want <key id>=<base64 key>, the id of 1 to %d letters, digits, '.', '_' or '-'",
				ErrInvalidConfig, n, MaxSigningKeyIDLen)
		}
		key, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, fmt.Errorf("%w: signing keys file, line %d: key %s is not standard base64", ErrInvalidConfig, n, quote(id))
		}
		if _, dup := c.Keys[id]; dup {
			return nil, fmt.Errorf("%w: signing keys file, line %d: key id %s given twice", ErrInvalidConfig, n, quote(id))
		}
		c.Keys[id] = key
		if c.ActiveKeyID == "" {
			c.ActiveKeyID = id
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: signing keys file: %v", ErrInvalidConfig, err)
	}
	if _, err := newSigner(c); err != nil { // report a short key or an empty file now, not at queue creation
		return nil, err
	}
	return c, nil
}
