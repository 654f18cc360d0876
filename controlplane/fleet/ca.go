package fleet

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ControlIdentity is the certificate common name (and so the MQTT user
// name on Mosquitto) of the control plane itself. No device may enroll
// under it.
const ControlIdentity = "starling-control"

// URI SANs that say which kind of identity a certificate carries; the
// common name must agree with them.
const (
	uriDevicePrefix = "urn:starling:device:"
	uriControl      = "urn:starling:control"
)

// File names inside Options.Dir.
const (
	caKeyFile  = "ca.key"
	caCertFile = "ca.crt"
)

// authority is the fleet CA: its certificate and private key.
type authority struct {
	cert *x509.Certificate
	key  crypto.Signer
	pem  []byte
}

// loadOrCreateCA reads dir/ca.key and dir/ca.crt, or creates both (an
// ECDSA P-256 key, a 10-year self-signed CA) when neither exists. One
// without the other is an error: a half-written CA is not silently replaced.
func loadOrCreateCA(dir string, now time.Time) (*authority, error) {
	keyPath, certPath := filepath.Join(dir, caKeyFile), filepath.Join(dir, caCertFile)
	keyPEM, kerr := os.ReadFile(keyPath)
	certPEM, cerr := os.ReadFile(certPath)
	switch {
	case kerr == nil && cerr == nil:
		return parseCA(keyPEM, certPEM, keyPath)
	case errors.Is(kerr, os.ErrNotExist) && errors.Is(cerr, os.ErrNotExist):
	case kerr != nil && !errors.Is(kerr, os.ErrNotExist):
		return nil, fmt.Errorf("fleet: read CA key: %w", kerr)
	case cerr != nil && !errors.Is(cerr, os.ErrNotExist):
		return nil, fmt.Errorf("fleet: read CA certificate: %w", cerr)
	default:
		return nil, fmt.Errorf("%w: %s and %s must both exist or both be absent; restore the missing one from a backup", ErrOptions, keyPath, certPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("fleet: generate CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "Starling fleet CA", Organization: []string{"Starling"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("fleet: create CA certificate: %w", err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("fleet: encode CA key: %w", err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("fleet: write CA key: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("fleet: write CA certificate: %w", err)
	}
	return parseCA(keyPEM, certPEM, keyPath)
}

func parseCA(keyPEM, certPEM []byte, keyPath string) (*authority, error) {
	if fi, err := os.Stat(keyPath); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%w: CA key %s has mode %v; it must be readable by its owner only (chmod 600)", ErrOptions, keyPath, fi.Mode().Perm())
	}
	kb, _ := pem.Decode(keyPEM)
	cb, _ := pem.Decode(certPEM)
	if kb == nil || cb == nil {
		return nil, fmt.Errorf("%w: CA key or certificate is not PEM", ErrOptions)
	}
	k, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: CA key: %v", ErrOptions, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: CA key type %T cannot sign", ErrOptions, k)
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: CA certificate: %v", ErrOptions, err)
	}
	return &authority{cert: cert, key: signer, pem: certPEM}, nil
}

func newSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic("fleet: crypto/rand failed: " + err.Error())
	}
	return n.Add(n, big.NewInt(1))
}

func serialHex(n *big.Int) string { return hex.EncodeToString(n.Bytes()) }

// CAPEM returns the fleet CA certificate, PEM encoded: what devices and
// brokers are given to trust.
func (f *Fleet) CAPEM() []byte { return append([]byte(nil), f.ca.pem...) }

// CAPool returns a pool holding only the fleet CA.
func (f *Fleet) CAPool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(f.ca.cert)
	return p
}

// Fingerprint returns the SHA-256 of the CA certificate (DER) as
// "sha256:<hex>": the value an installer gives a device to pin the CA.
func (f *Fleet) Fingerprint() string { return Fingerprint(f.ca.cert) }

// Fingerprint returns the "sha256:<hex>" fingerprint of a certificate.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// issue signs a certificate for pub with the given template fields.
func (f *Fleet) issue(tmpl *x509.Certificate, pub any) (*x509.Certificate, []byte, error) {
	now := f.opts.Now()
	tmpl.SerialNumber = newSerial()
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = now.Add(-5 * time.Minute) // clock skew between hosts
	}
	if tmpl.NotAfter.After(f.ca.cert.NotAfter) {
		tmpl.NotAfter = f.ca.cert.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca.cert, pub, f.ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: sign certificate for %s: %w", tmpl.Subject.CommonName, err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: parse issued certificate: %w", err)
	}
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// ServerCert issues a TLS server certificate for the given host names and
// IP addresses (default "127.0.0.1", "::1" and "localhost"), with a fresh
// key that lives only in memory, valid for a year. The embedded broker and
// the device API use one; WriteServerCert keeps one on disk for Mosquitto.
// The chain includes the CA certificate, so that a device that pins the CA
// by fingerprint (agent/enroll) can check it during the handshake.
func (f *Fleet) ServerCert(hosts ...string) (tls.Certificate, error) {
	certPEM, keyPEM, err := f.serverCertPEM(hosts)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, err
	}
	c.Certificate = append(c.Certificate, f.ca.cert.Raw)
	return c, nil
}

func (f *Fleet) serverCertPEM(hosts []string) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		hosts = []string{"127.0.0.1", "::1", "localhost"}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("fleet: generate server key: %w", err)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0], Organization: []string{"Starling"}, OrganizationalUnit: []string{"server"}},
		NotAfter:    f.opts.Now().AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	_, certPEM, err = f.issue(tmpl, &key.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}), nil
}

// WriteServerCert issues a server certificate (see ServerCert) and writes
// it and its key (0600) to the given paths.
func (f *Fleet) WriteServerCert(certPath, keyPath string, hosts ...string) error {
	certPEM, keyPEM, err := f.serverCertPEM(hosts)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return fmt.Errorf("fleet: write server key: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return fmt.Errorf("fleet: write server certificate: %w", err)
	}
	return nil
}

// ControlCert issues the control plane's own client certificate (common
// name ControlIdentity) with a fresh in-memory key, valid for 30 days: a
// control plane makes a new one at every start. Brokers grant it rights
// over every device's topics.
func (f *Fleet) ControlCert() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("fleet: generate control key: %w", err)
	}
	u, _ := url.Parse(uriControl)
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: ControlIdentity, Organization: []string{"Starling"}, OrganizationalUnit: []string{"control"}},
		NotAfter:    f.opts.Now().AddDate(0, 0, 30),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
	c, _, err := f.issue(tmpl, &key.PublicKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}, nil
}

// Identity is who a verified client certificate belongs to.
type Identity struct {
	// ID is the device id, or ControlIdentity for the control plane.
	ID string
	// Control is true for the control plane's own identity.
	Control bool
	// Serial is the certificate's serial number, hex.
	Serial string
}

// CheckCert verifies that a client certificate was issued by this fleet's
// CA, is valid now, and is not revoked, and returns whose it is. It wraps
// ErrUntrusted or ErrRevoked. The identity comes only from the
// certificate: its common name, which must agree with its URI SAN.
func (f *Fleet) CheckCert(c *x509.Certificate) (Identity, error) {
	if c == nil {
		return Identity{}, fmt.Errorf("%w: no client certificate", ErrUntrusted)
	}
	now := f.opts.Now()
	if err := c.CheckSignatureFrom(f.ca.cert); err != nil {
		return Identity{}, fmt.Errorf("%w: %q was not issued by this fleet's CA: %v", ErrUntrusted, c.Subject.CommonName, err)
	}
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return Identity{}, fmt.Errorf("%w: %q is valid from %s to %s only", ErrUntrusted, c.Subject.CommonName, c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339))
	}
	client := false
	for _, u := range c.ExtKeyUsage {
		client = client || u == x509.ExtKeyUsageClientAuth
	}
	if !client || len(c.URIs) != 1 {
		return Identity{}, fmt.Errorf("%w: %q is not a Starling client certificate", ErrUntrusted, c.Subject.CommonName)
	}
	id := Identity{ID: c.Subject.CommonName, Serial: serialHex(c.SerialNumber)}
	switch u := c.URIs[0].String(); {
	case u == uriControl && id.ID == ControlIdentity:
		id.Control = true
	case strings.HasPrefix(u, uriDevicePrefix) && u[len(uriDevicePrefix):] == id.ID && validDeviceID(id.ID):
	default:
		return Identity{}, fmt.Errorf("%w: %q: common name and URI %s disagree", ErrUntrusted, id.ID, u)
	}
	f.mu.Lock()
	revoked := f.revoked[id.Serial]
	f.mu.Unlock()
	if revoked {
		return Identity{}, fmt.Errorf("%w: device %s (certificate %s) was revoked; enroll it again with a new token if this is a mistake", ErrRevoked, id.ID, id.Serial)
	}
	return id, nil
}

// VerifyConnection is a tls.Config.VerifyConnection for listeners that
// require a fleet client certificate: it refuses revoked and foreign
// certificates during the handshake.
func (f *Fleet) VerifyConnection(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		return nil // the listener's ClientAuth decides whether one is required
	}
	_, err := f.CheckCert(cs.PeerCertificates[0])
	return err
}

// checkCSR parses a PEM (or DER) certificate request and checks its
// signature and key type.
func checkCSR(csrData []byte) (*x509.CertificateRequest, error) {
	der := csrData
	if b, _ := pem.Decode(csrData); b != nil {
		if b.Type != "CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%w: PEM block is %q, want CERTIFICATE REQUEST", ErrCSR, b.Type)
		}
		der = b.Bytes
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCSR, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("%w: signature does not match its key: %v", ErrCSR, err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return nil, fmt.Errorf("%w: ECDSA curve %s not accepted (use P-256 or P-384)", ErrCSR, k.Curve.Params().Name)
		}
	case ed25519.PublicKey:
	default:
		return nil, fmt.Errorf("%w: key type %T not accepted (use ECDSA P-256 or Ed25519)", ErrCSR, k)
	}
	return csr, nil
}

// deviceTemplate is the certificate a device gets.
func (f *Fleet) deviceTemplate(id string) *x509.Certificate {
	u, _ := url.Parse(uriDevicePrefix + id)
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: id, Organization: []string{"Starling"}, OrganizationalUnit: []string{"device"}},
		NotAfter:    f.opts.Now().Add(f.opts.CertTTL),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:        []*url.URL{u},
	}
}

// CRL returns the PEM certificate revocation list of every revoked device
// certificate, signed by the CA and valid for a year (the control plane
// rewrites it at every start and every revocation).
func (f *Fleet) CRL() ([]byte, error) {
	f.mu.Lock()
	var entries []x509.RevocationListEntry
	now := f.opts.Now()
	for s := range f.revoked {
		b, _ := hex.DecodeString(s)
		entries = append(entries, x509.RevocationListEntry{SerialNumber: new(big.Int).SetBytes(b), RevocationTime: now})
	}
	f.mu.Unlock()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(now.UnixNano()),
		ThisUpdate:                now.Add(-5 * time.Minute),
		NextUpdate:                now.AddDate(1, 0, 0),
		RevokedCertificateEntries: entries,
	}, f.ca.cert, f.ca.key)
	if err != nil {
		return nil, fmt.Errorf("fleet: sign CRL: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), nil
}

// writeFileAtomic writes through a temporary file and a rename, so a
// reader (Mosquitto reloading its CRL) never sees half a file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// WriteFile writes data to path atomically with the given mode.
func WriteFile(path string, data []byte, mode os.FileMode) error {
	return writeFileAtomic(path, data, mode)
}
