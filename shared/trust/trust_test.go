package trust

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testMetadata(data []byte, now time.Time) ModelMetadata {
	return ModelMetadata{
		Name: "demo", Version: "1", Format: "tflite",
		Digest: Digest(data), Size: int64(len(data)),
		Created: now, Expires: now.Add(time.Hour),
	}
}

func mustKey(t testing.TB) *PrivateKey {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestVerifyModel(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	art := []byte("model bytes")
	key, other := mustKey(t), mustKey(t)
	good, err := SignModel(testMetadata(art, now), key)
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(f func(env *Envelope)) []byte {
		var env Envelope
		if err := json.Unmarshal(good, &env); err != nil {
			t.Fatal(err)
		}
		f(&env)
		b, _ := json.Marshal(env)
		return b
	}
	expiredMD := testMetadata(art, now)
	expiredMD.Expires = now.Add(-time.Second)
	expired, _ := SignModel(expiredMD, key)
	byOther, _ := SignModel(testMetadata(art, now), other)
	noDigest := testMetadata(art, now)
	noDigest.Digest = "md5:abc"
	badDigest, _ := SignModel(noDigest, key)

	tests := []struct {
		name  string
		env   []byte
		ring  *Keyring
		want  error
		check string
	}{
		{"good", good, NewKeyring(1, key.Public()), nil, ""},
		{"good among several keys", good, NewKeyring(1, other.Public(), key.Public()), nil, ""},
		{"wrong key", byOther, NewKeyring(1, key.Public()), ErrUnknownKey, "unknown-key"},
		{"tampered signed part", tamper(func(e *Envelope) {
			e.Signed = json.RawMessage(strings.Replace(string(e.Signed), `"version":"1"`, `"version":"2"`, 1))
		}), NewKeyring(1, key.Public()), ErrSignature, "signature"},
		{"garbage signature", tamper(func(e *Envelope) { e.Signatures[0].Sig = "!!" }), NewKeyring(1, key.Public()), ErrSignature, "signature"},
		{"no signatures", tamper(func(e *Envelope) { e.Signatures = nil }), NewKeyring(1, key.Public()), ErrThreshold, "threshold"},
		{"threshold two", good, NewKeyring(2, key.Public(), other.Public()), ErrThreshold, "threshold"},
		{"expired", expired, NewKeyring(1, key.Public()), ErrExpired, "expiry"},
		{"not json", []byte("{nope"), NewKeyring(1, key.Public()), ErrMalformed, "malformed"},
		{"bad digest field", badDigest, NewKeyring(1, key.Public()), ErrMalformed, "malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md, err := tt.ring.VerifyModel(tt.env, now)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("VerifyModel: %v", err)
				}
				if md.Name != "demo" || md.Version != "1" || md.Size != int64(len(art)) {
					t.Fatalf("metadata = %+v", md)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if got := Check(err); got != tt.check {
				t.Fatalf("Check = %q, want %q", got, tt.check)
			}
		})
	}
}

func TestVerifyArtifact(t *testing.T) {
	now := time.Now()
	art := []byte("model bytes")
	md := testMetadata(art, now)
	if err := VerifyArtifact(&md, art); err != nil {
		t.Fatal(err)
	}
	if err := VerifyArtifact(&md, []byte("model bytez")); !errors.Is(err, ErrDigest) {
		t.Fatalf("tampered: %v", err)
	}
	if err := VerifyArtifact(&md, art[:3]); !errors.Is(err, ErrSize) {
		t.Fatalf("truncated: %v", err)
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	k := mustKey(t)
	priv, pub := filepath.Join(dir, "k.key"), filepath.Join(dir, "k.pub")
	if err := WriteKeyFile(priv, k.PrivateFile(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyFile(pub, k.PublicFile(), 0o644); err != nil {
		t.Fatal(err)
	}
	k2, err := ReadPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	if k2.ID != k.ID {
		t.Fatalf("id %s != %s", k2.ID, k.ID)
	}
	p, err := ReadPublicKey(pub)
	if err != nil || KeyID(p) != k.ID {
		t.Fatalf("public: %v", err)
	}
	if _, err := ReadPrivateKey(pub); !errors.Is(err, ErrMalformed) {
		t.Fatalf("reading a public file as private: %v", err)
	}
	if _, err := ReadPublicKey(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file: no error")
	}
}
