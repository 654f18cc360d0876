// Package enroll gives the agent its fleet identity: it creates the
// device's private key on the device (ECDSA P-256, never sent anywhere),
// exchanges a one-time enrollment token and a certificate request for a
// device certificate at the control plane's device API over TLS, pinning
// the fleet CA given at install (a CA file or its SHA-256 fingerprint), and
// keeps key, certificate and CA in the agent's data directory. Enrollment
// happens once: later starts load the stored identity and need no token.
// The identity then authenticates the agent's MQTT session (mqtts://) and
// its HTTP calls to the device API, with the fleet CA as the only root.
package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	mrand "math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/starling-edge/starling/shared/wire"
)

// Files in the identity directory.
const (
	KeyFile  = "device.key" // PKCS#8 PEM, 0600; created on the device, never sent
	CertFile = "device.crt" // the device certificate, PEM; its presence means "enrolled"
	CAFile   = "ca.crt"     // the fleet CA, PEM: the only root for MQTT and the device API
)

// EnrollPath is the control plane's enrollment endpoint on its device API.
const EnrollPath = "/api/v1/enroll"

// uriDevicePrefix is the URI SAN prefix of device certificates.
const uriDevicePrefix = "urn:starling:device:"

// Options configure Ensure. Dir is required; URL, Token and a CA pin
// (CAPEM or CAFingerprint) are required only when the device is not
// enrolled yet.
type Options struct {
	// Dir holds the key, certificate and CA; created 0700 if missing.
	Dir string
	// URL is the control plane's device API, https://host:port.
	URL string
	// Token is the one-time enrollment token (starlingctl device
	// enroll-token). Ignored once the device is enrolled.
	Token string
	// DeviceID is the id the device asks for (the request's common name).
	// Empty lets a token bound to a device decide; a certificate for
	// another id than a non-empty DeviceID is refused.
	DeviceID string
	// CAPEM is the fleet CA certificate given at install (--ca-file).
	CAPEM []byte
	// CAFingerprint is the fleet CA's "sha256:<hex>" fingerprint given at
	// install (--ca-fingerprint), as starling-control prints it. With
	// CAPEM too, both must match.
	CAFingerprint string
	// Timeout bounds one enrollment request; default 30s.
	Timeout time.Duration
	// Backoff paces retries after a transient failure (network, 5xx);
	// default doubling from 500ms to 30s with jitter. Refusals (token,
	// pin, request) are not retried.
	Backoff func(attempt int) time.Duration
	// Logger; default slog.Default().
	Logger *slog.Logger
}

// Identity is the device's fleet identity.
type Identity struct {
	// DeviceID comes from the certificate (common name and URI SAN).
	DeviceID string
	// Certificate is the TLS client certificate with its private key.
	Certificate tls.Certificate
	// Leaf is the parsed device certificate.
	Leaf *x509.Certificate
	// CA is the fleet CA.
	CA *x509.Certificate
}

// Roots returns a pool holding only the fleet CA.
func (id *Identity) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(id.CA)
	return p
}

// TLSConfig returns a client configuration that presents the device
// certificate and trusts only the fleet CA. Each call returns a new value.
func (id *Identity) TLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{id.Certificate},
		RootCAs:      id.Roots(),
		MinVersion:   tls.VersionTLS12,
	}
}

// HTTPClient returns a client for the device API with this identity
// (mutual TLS, fleet CA only) and the given overall timeout (0: none; the
// answer's headers must still come within 30s).
func (id *Identity) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		TLSClientConfig:       id.TLSConfig(),
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       time.Minute,
	}}
}

// Load reads the identity stored in dir. It returns ErrNotEnrolled when
// there is no certificate, ErrIdentity when what is there is unusable.
func Load(dir string) (*Identity, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, CertFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("enroll: no device certificate in %s: %w", dir, ErrNotEnrolled)
	}
	if err != nil {
		return nil, fmt.Errorf("enroll: read device certificate: %v: %w", err, ErrIdentity)
	}
	key, err := readKey(filepath.Join(dir, KeyFile))
	if err != nil {
		return nil, err
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return nil, fmt.Errorf("enroll: read fleet CA: %v: %w", err, ErrIdentity)
	}
	ca, err := parseCA(caPEM)
	if err != nil {
		return nil, fmt.Errorf("enroll: %s: %v: %w", filepath.Join(dir, CAFile), err, ErrIdentity)
	}
	id, err := checkCert(certPEM, key, ca, "", time.Now())
	if err != nil {
		return nil, fmt.Errorf("enroll: %s: %v: %w", filepath.Join(dir, CertFile), err, ErrIdentity)
	}
	return id, nil
}

// Ensure returns the device's identity: the stored one when the device is
// enrolled (the token is then not needed and not used), else it enrolls
// with opts.Token, retrying transient failures until ctx ends. A refused
// token wraps ErrTokenUsed, ErrTokenExpired or ErrTokenUnknown; a control
// plane that does not present the pinned CA, ErrPin (the token is not
// sent to it). enrolled reports whether this call enrolled the device.
func Ensure(ctx context.Context, opts Options) (id *Identity, enrolled bool, err error) {
	if opts.Dir == "" {
		return nil, false, fmt.Errorf("enroll: identity directory is empty: %w", ErrOptions)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	id, err = Load(opts.Dir)
	switch {
	case err == nil && opts.DeviceID != "" && id.DeviceID != opts.DeviceID:
		return nil, false, fmt.Errorf("enroll: the device certificate in %s is for device %q, not %q: %w", opts.Dir, id.DeviceID, opts.DeviceID, ErrIdentity)
	case err == nil:
		if opts.Token != "" {
			opts.Logger.Info("device already enrolled; the enrollment token is not needed any more", "device", id.DeviceID)
		}
		return id, false, nil
	case !errors.Is(err, ErrNotEnrolled):
		return nil, false, err
	case opts.Token == "":
		return nil, false, fmt.Errorf("enroll: no device certificate in %s and no enrollment token: enroll with --enroll-url, --enroll-token (or --enroll-token-file) and --ca-file or --ca-fingerprint: %w", opts.Dir, ErrNotEnrolled)
	}
	pin, err := newPin(opts.CAPEM, opts.CAFingerprint)
	if err != nil {
		return nil, false, err
	}
	u, err := checkURL(opts.URL)
	if err != nil {
		return nil, false, err
	}
	if opts.DeviceID != "" && !wire.ValidDeviceID(opts.DeviceID) {
		return nil, false, fmt.Errorf("enroll: device id %q: want 1-64 of [A-Za-z0-9._-]: %w", opts.DeviceID, ErrOptions)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Backoff == nil {
		opts.Backoff = jitter(500*time.Millisecond, 30*time.Second)
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("enroll: identity directory: %w", err)
	}
	key, err := loadOrCreateKey(filepath.Join(opts.Dir, KeyFile))
	if err != nil {
		return nil, false, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: opts.DeviceID}}, key)
	if err != nil {
		return nil, false, fmt.Errorf("enroll: certificate request: %w", err)
	}
	body, _ := json.Marshal(map[string]string{
		"token": opts.Token,
		"csr":   string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
	})
	client := &http.Client{Timeout: opts.Timeout, Transport: &http.Transport{
		TLSClientConfig: pin.tlsConfig(), TLSHandshakeTimeout: 10 * time.Second, DisableKeepAlives: true,
	}}
	endpoint := u.JoinPath(EnrollPath).String()
	for attempt := 1; ; attempt++ {
		certPEM, caPEM, err := post(ctx, client, endpoint, body)
		if err == nil {
			id, err = store(opts.Dir, certPEM, caPEM, key, pin, opts.DeviceID)
			if err != nil {
				return nil, false, err
			}
			opts.Logger.Info("device enrolled", "device", id.DeviceID, "url", opts.URL, "expires", id.Leaf.NotAfter.Format(time.RFC3339))
			return id, true, nil
		}
		var t transient
		if !errors.As(err, &t) {
			return nil, false, err
		}
		d := opts.Backoff(attempt)
		opts.Logger.Warn("enrollment failed; will retry", "url", opts.URL, "attempt", attempt, "retry_in", d, "err", err)
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil, false, fmt.Errorf("enroll: gave up after %d attempts: %w (last: %v)", attempt, ctx.Err(), err)
		case <-timer.C:
		}
	}
}

// transient marks failures worth retrying: the control plane was
// unreachable or answered 5xx/429.
type transient struct{ err error }

func (t transient) Error() string { return t.err.Error() }
func (t transient) Unwrap() error { return t.err }

// post sends one enrollment request.
func post(ctx context.Context, c *http.Client, endpoint string, body []byte) (certPEM, caPEM []byte, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, nil, fmt.Errorf("enroll: %v: %w", err, ErrOptions)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, ErrPin) {
			return nil, nil, fmt.Errorf("enroll: %s: %w", endpoint, err)
		}
		return nil, nil, transient{fmt.Errorf("enroll: control plane unreachable at %s: %w", endpoint, err)}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, transient{fmt.Errorf("enroll: reading the answer: %w", err)}
	}
	if resp.StatusCode != http.StatusCreated {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(b[:min(len(b), 200)]))
		}
		return nil, nil, answerError(resp.StatusCode, e.Error)
	}
	var en struct {
		DeviceID    string `json:"device_id"`
		Certificate string `json:"certificate"`
		CA          string `json:"ca"`
	}
	if err := json.Unmarshal(b, &en); err != nil || en.Certificate == "" || en.CA == "" {
		return nil, nil, fmt.Errorf("enroll: the answer is not a certificate and CA (%.200s): %w", b, ErrRefused)
	}
	return []byte(en.Certificate), []byte(en.CA), nil
}

// answerError classifies a refusal. The control plane answers 403 for a
// token it will not redeem and says which case in its message (see
// controlplane/fleet's token errors).
func answerError(status int, msg string) error {
	switch {
	case status == http.StatusForbidden && strings.Contains(msg, "already used"):
		return fmt.Errorf("enroll: the control plane refused the token: %s (make a new one with `starlingctl device enroll-token`): %w", msg, ErrTokenUsed)
	case status == http.StatusForbidden && strings.Contains(msg, "expired"):
		return fmt.Errorf("enroll: the control plane refused the token: %s (make a new one with `starlingctl device enroll-token`): %w", msg, ErrTokenExpired)
	case status == http.StatusForbidden && (strings.Contains(msg, "unknown token") || strings.Contains(msg, "not one this control plane issued")):
		return fmt.Errorf("enroll: the control plane refused the token: %s: %w", msg, ErrTokenUnknown)
	case status >= 500 || status == http.StatusTooManyRequests:
		return transient{fmt.Errorf("enroll: control plane answered %d: %s", status, msg)}
	default:
		return fmt.Errorf("enroll: control plane answered %d: %s: %w", status, msg, ErrRefused)
	}
}

// store checks what the control plane issued and writes it: the CA, then
// the certificate (whose presence marks the device enrolled), each
// atomically.
func store(dir string, certPEM, caPEM []byte, key *ecdsa.PrivateKey, p *pin, wantID string) (*Identity, error) {
	ca, err := parseCA(caPEM)
	if err != nil {
		return nil, fmt.Errorf("enroll: the CA in the answer: %v: %w", err, ErrRefused)
	}
	if !p.matches(ca) {
		return nil, fmt.Errorf("enroll: the answer names CA %s, not the pinned one: %w", fingerprint(ca), ErrPin)
	}
	id, err := checkCert(certPEM, key, ca, wantID, time.Now())
	if err != nil {
		return nil, fmt.Errorf("enroll: the issued certificate: %v: %w", err, ErrRefused)
	}
	if err := writeFileAtomic(filepath.Join(dir, CAFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}), 0o644); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, CertFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Leaf.Raw}), 0o644); err != nil {
		return nil, err
	}
	return id, nil
}

// checkCert verifies a device certificate: issued by ca, valid at now,
// a client certificate, for key, and naming one device id in both its
// common name and its URI SAN (wantID when not empty).
func checkCert(certPEM []byte, key crypto.Signer, ca *x509.Certificate, wantID string, now time.Time) (*Identity, error) {
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, err
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: poolOf(ca), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return nil, fmt.Errorf("does not verify against the fleet CA %s (expired? re-enroll with a new token after removing it): %v", fingerprint(ca), err)
	}
	pub, ok := leaf.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("is not for this device's key %s", KeyFile)
	}
	id := leaf.Subject.CommonName
	if !wire.ValidDeviceID(id) || len(leaf.URIs) != 1 || leaf.URIs[0].String() != uriDevicePrefix+id {
		return nil, fmt.Errorf("common name %.80q and URI SAN %v do not name one device", id, leaf.URIs)
	}
	if wantID != "" && id != wantID {
		return nil, fmt.Errorf("is for device %q, not %q", id, wantID)
	}
	return &Identity{
		DeviceID:    id,
		Certificate: tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf},
		Leaf:        leaf,
		CA:          ca,
	}, nil
}

func poolOf(c *x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c)
	return p
}

// parseCA parses one PEM CA certificate.
func parseCA(b []byte) (*x509.Certificate, error) {
	blk, rest := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, errors.New("not a PEM certificate")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("more than one PEM block; want the fleet CA alone")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	if !c.IsCA {
		return nil, fmt.Errorf("%q is not a CA certificate", c.Subject.CommonName)
	}
	return c, nil
}

// fingerprint is the "sha256:<hex>" of a certificate's DER.
func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// ParseFingerprint normalises a "sha256:<64 hex>" CA fingerprint (colons
// between bytes and upper case are accepted).
func ParseFingerprint(s string) (string, error) {
	h := strings.ToLower(strings.TrimSpace(s))
	h = strings.TrimPrefix(h, "sha256:")
	h = strings.ReplaceAll(h, ":", "")
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return "", fmt.Errorf("CA fingerprint %.100q: want sha256:<64 hex digits> as starling-control prints it: %w", s, ErrOptions)
	}
	return "sha256:" + h, nil
}

// pin is the fleet CA the device was installed to trust.
type pin struct {
	ca          *x509.Certificate // from a CA file, or nil
	fingerprint string            // normalised, or ""
}

func newPin(caPEM []byte, fp string) (*pin, error) {
	p := &pin{}
	if len(caPEM) > 0 {
		ca, err := parseCA(caPEM)
		if err != nil {
			return nil, fmt.Errorf("enroll: CA file: %v: %w", err, ErrOptions)
		}
		p.ca = ca
	}
	if fp != "" {
		n, err := ParseFingerprint(fp)
		if err != nil {
			return nil, fmt.Errorf("enroll: %w", err)
		}
		p.fingerprint = n
	}
	switch {
	case p.ca == nil && p.fingerprint == "":
		return nil, fmt.Errorf("enroll: no fleet CA to pin: give --ca-file or --ca-fingerprint: %w", ErrOptions)
	case p.ca != nil && p.fingerprint != "" && fingerprint(p.ca) != p.fingerprint:
		return nil, fmt.Errorf("enroll: the CA file's fingerprint is %s, not the given %s: %w", fingerprint(p.ca), p.fingerprint, ErrOptions)
	}
	return p, nil
}

func (p *pin) matches(c *x509.Certificate) bool {
	if p.ca != nil {
		return bytes.Equal(p.ca.Raw, c.Raw)
	}
	return fingerprint(c) == p.fingerprint
}

// tlsConfig verifies the server against the pinned CA only: with a CA
// file as the sole root, with a fingerprint by finding that CA in the
// chain the server sends. Either way the host name is checked.
func (p *pin) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Verification is VerifyConnection's: the standard one would use
		// the system roots, which must not count here.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("no server certificate: %w", ErrPin)
			}
			ca := p.ca
			if ca == nil {
				for _, c := range cs.PeerCertificates[1:] {
					if fingerprint(c) == p.fingerprint {
						ca = c
						break
					}
				}
				if ca == nil || !ca.IsCA {
					return fmt.Errorf("no CA with fingerprint %s in the server's chain: %w", p.fingerprint, ErrPin)
				}
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots: poolOf(ca), DNSName: cs.ServerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				return fmt.Errorf("server certificate for %s does not verify against the pinned CA %s: %v: %w", cs.ServerName, fingerprint(ca), err, ErrPin)
			}
			return nil
		},
	}
}

// checkURL accepts https://host[:port] with no path beyond "/".
func checkURL(s string) (*url.URL, error) {
	if err := CheckURL(s); err != nil {
		return nil, err
	}
	u, _ := url.Parse(s)
	u.Path = ""
	return u, nil
}

// CheckURL reports whether s is usable as the device API URL.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("device API URL %.200q: want https://host:port: %w", s, ErrOptions)
	}
	return nil
}

// readKey reads the device key.
func readKey(path string) (*ecdsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("enroll: read device key: %v: %w", err, ErrIdentity)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("enroll: %s is not a PEM private key: %w", path, ErrIdentity)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("enroll: %s: %v: %w", path, err, ErrIdentity)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("enroll: %s is a %T, want ECDSA P-256: %w", path, k, ErrIdentity)
	}
	return ek, nil
}

// loadOrCreateKey returns the device key, creating it (0600) when it does
// not exist yet. A key left by an enrollment that failed is reused.
func loadOrCreateKey(path string) (*ecdsa.PrivateKey, error) {
	if _, err := os.Stat(path); err == nil {
		return readKey(path)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("enroll: generate device key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("enroll: encode device key: %w", err)
	}
	if err := writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// writeFileAtomic writes data to a temporary file in the same directory,
// syncs it and renames it over path, so a crash leaves the old file or
// the new one, never a torn one.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("enroll: write %s: %w", path, err)
	}
	if d, err := os.Open(filepath.Dir(path)); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}

// jitter doubles from base to max and picks in the upper half.
func jitter(base, max time.Duration) func(int) time.Duration {
	return func(attempt int) time.Duration {
		d := base
		for i := 1; i < attempt && d < max; i++ {
			d *= 2
		}
		d = min(d, max)
		return d/2 + time.Duration(mrand.Int64N(int64(d/2)+1))
	}
}
