// Package trust signs and verifies Starling update metadata. The envelope
// follows The Update Framework's shape ({"signed": ..., "signatures": [...]},
// Ed25519 keys named by key id) so that the TUF roles of the architecture map
// (root, targets, snapshot, timestamp) can replace the single release key
// without changing what the agent stores or how it asks for verification:
// the agent depends only on the ModelVerifier interface.
package trust

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"time"
)

// ModelType is the _type of model metadata.
const ModelType = "starling-model"

// ModelMetadata describes one model version. It is what the operator signs.
type ModelMetadata struct {
	Type    string    `json:"_type"`
	Name    string    `json:"name"`
	Version string    `json:"version"`
	Format  string    `json:"format"` // engine format, e.g. "tflite"
	Digest  string    `json:"digest"` // "sha256:<hex>"
	Size    int64     `json:"size"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// Signature is one signature over the envelope's signed bytes.
type Signature struct {
	KeyID string `json:"keyid"`
	Sig   string `json:"sig"` // base64 (standard encoding)
}

// Envelope is signed metadata as it travels and is stored. Signed holds the
// exact bytes that were signed; they are never re-encoded.
type Envelope struct {
	Signed     json.RawMessage `json:"signed"`
	Signatures []Signature     `json:"signatures"`
}

// ModelVerifier turns an envelope into trusted metadata, or says why not.
// Errors wrap one of the sentinels in errors.go.
type ModelVerifier interface {
	VerifyModel(envelope []byte, now time.Time) (*ModelMetadata, error)
}

// Digest returns the "sha256:<hex>" digest of data.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// KeyID returns the id of an Ed25519 public key: hex sha256 of its bytes.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:])
}

// KeyFile is the on-disk form of a key. Private is empty in a public key file.
type KeyFile struct {
	KeyType string `json:"keytype"` // "ed25519"
	KeyID   string `json:"keyid"`
	Public  string `json:"public"`            // hex
	Private string `json:"private,omitempty"` // hex seed+public (64 bytes)
}

// PrivateKey is a signing key with its id.
type PrivateKey struct {
	ID  string
	Key ed25519.PrivateKey
}

// GenerateKey makes a new Ed25519 signing key.
func GenerateKey() (*PrivateKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("trust: generate key: %w", err)
	}
	return &PrivateKey{ID: KeyID(pub), Key: priv}, nil
}

// Public returns the key's public half.
func (k *PrivateKey) Public() ed25519.PublicKey { return k.Key.Public().(ed25519.PublicKey) }

// PrivateFile returns the private key file form.
func (k *PrivateKey) PrivateFile() KeyFile {
	return KeyFile{KeyType: "ed25519", KeyID: k.ID, Public: hex.EncodeToString(k.Public()), Private: hex.EncodeToString(k.Key)}
}

// PublicFile returns the public key file form.
func (k *PrivateKey) PublicFile() KeyFile {
	return KeyFile{KeyType: "ed25519", KeyID: k.ID, Public: hex.EncodeToString(k.Public())}
}

// WriteKeyFile writes a key file with the given permissions.
func WriteKeyFile(path string, kf KeyFile, perm os.FileMode) error {
	b, err := json.MarshalIndent(kf, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), perm)
}

func readKeyFile(path string) (KeyFile, ed25519.PublicKey, error) {
	var kf KeyFile
	b, err := os.ReadFile(path)
	if err != nil {
		return kf, nil, fmt.Errorf("trust: read key %s: %w", path, err)
	}
	if err := json.Unmarshal(b, &kf); err != nil {
		return kf, nil, fmt.Errorf("trust: key %s: %v: %w", path, err, ErrMalformed)
	}
	if kf.KeyType != "ed25519" {
		return kf, nil, fmt.Errorf("trust: key %s: keytype %q is not ed25519: %w", path, kf.KeyType, ErrMalformed)
	}
	pub, err := hex.DecodeString(kf.Public)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return kf, nil, fmt.Errorf("trust: key %s: public key is not %d hex bytes: %w", path, ed25519.PublicKeySize, ErrMalformed)
	}
	return kf, ed25519.PublicKey(pub), nil
}

// ReadPrivateKey reads a private key file written by WriteKeyFile.
func ReadPrivateKey(path string) (*PrivateKey, error) {
	kf, pub, err := readKeyFile(path)
	if err != nil {
		return nil, err
	}
	priv, err := hex.DecodeString(kf.Private)
	if err != nil || len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("trust: key %s: no valid private key (is this a public key file?): %w", path, ErrMalformed)
	}
	k := &PrivateKey{ID: KeyID(pub), Key: ed25519.PrivateKey(priv)}
	if !bytes.Equal(k.Public(), pub) {
		return nil, fmt.Errorf("trust: key %s: private and public halves differ: %w", path, ErrMalformed)
	}
	return k, nil
}

// ReadPublicKey reads the public half of any key file.
func ReadPublicKey(path string) (ed25519.PublicKey, error) {
	_, pub, err := readKeyFile(path)
	return pub, err
}

// Sign signs the JSON encoding of v with every key and returns the envelope.
func Sign(v any, keys ...*PrivateKey) (*Envelope, error) {
	signed, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("trust: encode metadata: %w", err)
	}
	env := &Envelope{Signed: signed}
	for _, k := range keys {
		env.Signatures = append(env.Signatures, Signature{
			KeyID: k.ID,
			Sig:   base64.StdEncoding.EncodeToString(ed25519.Sign(k.Key, signed)),
		})
	}
	return env, nil
}

// SignModel fills in the metadata type and signs it.
func SignModel(md ModelMetadata, keys ...*PrivateKey) ([]byte, error) {
	md.Type = ModelType
	env, err := Sign(md, keys...)
	if err != nil {
		return nil, err
	}
	return json.Marshal(env)
}

// Keyring is a set of trusted Ed25519 public keys with a signature threshold.
// It is the single-role verifier that TUF's targets role generalises.
type Keyring struct {
	keys      map[string]ed25519.PublicKey
	threshold int
}

// NewKeyring trusts the given keys; threshold defaults to 1.
func NewKeyring(threshold int, keys ...ed25519.PublicKey) *Keyring {
	if threshold < 1 {
		threshold = 1
	}
	kr := &Keyring{keys: make(map[string]ed25519.PublicKey), threshold: threshold}
	for _, k := range keys {
		kr.keys[KeyID(k)] = k
	}
	return kr
}

var _ ModelVerifier = (*Keyring)(nil)

// VerifyEnvelope checks the signatures of an envelope and returns its signed
// bytes. It does not look inside them.
func (kr *Keyring) VerifyEnvelope(envelope []byte) ([]byte, error) {
	var env Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("trust: envelope is not valid JSON: %v: %w", err, ErrMalformed)
	}
	if len(env.Signed) == 0 {
		return nil, fmt.Errorf("trust: envelope has no signed part: %w", ErrMalformed)
	}
	if len(env.Signatures) == 0 {
		return nil, fmt.Errorf("trust: envelope has no signatures: %w", ErrThreshold)
	}
	valid := make(map[string]bool)
	known := 0
	for _, s := range env.Signatures {
		pub, ok := kr.keys[s.KeyID]
		if !ok {
			continue
		}
		known++
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil || len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, env.Signed, sig) {
			return nil, fmt.Errorf("trust: signature by key %.12s does not verify: %w", s.KeyID, ErrSignature)
		}
		valid[s.KeyID] = true
	}
	if known == 0 {
		return nil, fmt.Errorf("trust: signed by key %.12s, which this device does not trust: %w", env.Signatures[0].KeyID, ErrUnknownKey)
	}
	if len(valid) < kr.threshold {
		return nil, fmt.Errorf("trust: %d valid signatures, %d required: %w", len(valid), kr.threshold, ErrThreshold)
	}
	return env.Signed, nil
}

// VerifyModel verifies the envelope's signatures, parses the model metadata
// and checks its expiry against now.
func (kr *Keyring) VerifyModel(envelope []byte, now time.Time) (*ModelMetadata, error) {
	signed, err := kr.VerifyEnvelope(envelope)
	if err != nil {
		return nil, err
	}
	return ParseModel(signed, now)
}

// ParseModel parses signed model metadata bytes and checks their fields and
// expiry. It does not check signatures: call it only on verified bytes.
func ParseModel(signed []byte, now time.Time) (*ModelMetadata, error) {
	var md ModelMetadata
	if err := json.Unmarshal(signed, &md); err != nil {
		return nil, fmt.Errorf("trust: model metadata: %v: %w", err, ErrMalformed)
	}
	if md.Type != ModelType {
		return nil, fmt.Errorf("trust: metadata _type %q is not %q: %w", md.Type, ModelType, ErrMalformed)
	}
	switch {
	case md.Name == "":
		return nil, fmt.Errorf("trust: model metadata has no name: %w", ErrMalformed)
	case md.Version == "":
		return nil, fmt.Errorf("trust: model %s has no version: %w", md.Name, ErrMalformed)
	case len(md.Digest) != len("sha256:")+64 || md.Digest[:7] != "sha256:":
		return nil, fmt.Errorf("trust: model %s:%s digest %q is not sha256:<64 hex>: %w", md.Name, md.Version, md.Digest, ErrMalformed)
	case md.Size <= 0:
		return nil, fmt.Errorf("trust: model %s:%s size %d: %w", md.Name, md.Version, md.Size, ErrMalformed)
	case md.Expires.IsZero():
		return nil, fmt.Errorf("trust: model %s:%s has no expiry: %w", md.Name, md.Version, ErrMalformed)
	}
	if !now.Before(md.Expires) {
		return nil, fmt.Errorf("trust: model %s:%s expired at %s: %w", md.Name, md.Version, md.Expires.UTC().Format(time.RFC3339), ErrExpired)
	}
	return &md, nil
}

// VerifyArtifact checks an artifact's size and digest against its metadata.
func VerifyArtifact(md *ModelMetadata, data []byte) error {
	if int64(len(data)) != md.Size {
		return fmt.Errorf("trust: model %s:%s artifact is %d bytes, metadata says %d: %w", md.Name, md.Version, len(data), md.Size, ErrSize)
	}
	if got := Digest(data); got != md.Digest {
		return fmt.Errorf("trust: model %s:%s artifact digest %s, metadata says %s: %w", md.Name, md.Version, got, md.Digest, ErrDigest)
	}
	return nil
}
