package fleet_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/starling-edge/starling/controlplane/fleet"
	"github.com/starling-edge/starling/controlplane/internal/cptest"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func open(t *testing.T, dir string, c *clock) *fleet.Fleet {
	t.Helper()
	f, err := fleet.Open(fleet.Options{Dir: dir, Now: c.now, AuditLimit: 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func parse(t *testing.T, certPEM string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(certPEM))
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCAFilesAndReopen(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Now()}
	f := open(t, dir, c)
	fi, err := os.Stat(filepath.Join(dir, "ca.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("ca.key: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	fp := f.Fingerprint()
	f.Close()
	f2 := open(t, dir, c)
	if f2.Fingerprint() != fp || !strings.HasPrefix(fp, "sha256:") {
		t.Fatalf("fingerprint changed on reopen: %s -> %s", fp, f2.Fingerprint())
	}
	f2.Close()
	if err := os.Chmod(filepath.Join(dir, "ca.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := fleet.Open(fleet.Options{Dir: dir}); !errors.Is(err, fleet.ErrOptions) || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable CA key: err = %v", err)
	}
	os.Chmod(filepath.Join(dir, "ca.key"), 0o600)
	os.Remove(filepath.Join(dir, "ca.crt"))
	if _, err := fleet.Open(fleet.Options{Dir: dir}); !errors.Is(err, fleet.ErrOptions) {
		t.Fatalf("CA key without certificate: err = %v", err)
	}
}

func TestEnrollTokens(t *testing.T) {
	c := &clock{time.Now()}
	f := open(t, t.TempDir(), c)
	bound, _, err := f.NewEnrollToken("cam-1", time.Hour, "alice")
	if err != nil {
		t.Fatal(err)
	}
	_, csr := cptest.CSR(t, "")
	e, err := f.Enroll(bound, csr)
	if err != nil {
		t.Fatal(err)
	}
	cert := parse(t, e.Certificate)
	id, err := f.CheckCert(cert)
	if err != nil || id.ID != "cam-1" || id.Control {
		t.Fatalf("CheckCert = %+v, %v", id, err)
	}
	// Replay: the same token again, even with a fresh key.
	_, csr2 := cptest.CSR(t, "cam-1")
	if _, err := f.Enroll(bound, csr2); !errors.Is(err, fleet.ErrTokenUsed) || !strings.Contains(err.Error(), "cam-1") {
		t.Fatalf("replayed token: err = %v", err)
	}

	short, _, _ := f.NewEnrollToken("", time.Minute, "alice")
	unbound, _, _ := f.NewEnrollToken("", time.Hour, "alice")
	other, _, _ := f.NewEnrollToken("cam-2", time.Hour, "alice")
	c.t = c.t.Add(2 * time.Minute)
	badSig := func() []byte {
		_, p := cptest.CSR(t, "cam-9")
		b, _ := pem.Decode(p)
		b.Bytes[len(b.Bytes)-3] ^= 0xff
		return pem.EncodeToMemory(b)
	}()
	rsaLike := func() []byte { // P-224 is not accepted
		k, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
		der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "cam-9"}}, k)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	}()
	_, good := cptest.CSR(t, "cam-9")
	_, named2 := cptest.CSR(t, "cam-3")
	_, control := cptest.CSR(t, fleet.ControlIdentity)
	for _, tc := range []struct {
		name, token string
		csr         []byte
		want        error
		msg         string
	}{
		{"expired", short, good, fleet.ErrTokenExpired, "expired"},
		{"unknown", "stl-enroll-nope", good, fleet.ErrTokenUnknown, "enroll-token"},
		{"garbage csr", unbound, []byte("hello"), fleet.ErrCSR, ""},
		{"bad signature", unbound, badSig, fleet.ErrCSR, "signature"},
		{"weak curve", unbound, rsaLike, fleet.ErrCSR, "P-224"},
		{"other device", other, named2, fleet.ErrCSR, `token is for device "cam-2"`},
		{"control name", unbound, control, fleet.ErrCSR, "starling-control"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.Enroll(tc.token, tc.csr)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v; want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
	// A refused request did not spend the token.
	if e, err := f.Enroll(unbound, good); err != nil || e.DeviceID != "cam-9" {
		t.Fatalf("unbound token after refusals: %+v, %v", e, err)
	}
	if _, _, err := f.NewEnrollToken("bad/id", time.Hour, ""); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("bad device id: %v", err)
	}
	if _, _, err := f.NewEnrollToken("", 90*24*time.Hour, ""); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("too long ttl: %v", err)
	}
}

func TestRevokeSurvivesRestartAndCRL(t *testing.T) {
	dir := t.TempDir()
	c := &clock{time.Now()}
	f := open(t, dir, c)
	var kicked []string
	f.OnRevoke(func(id string) { kicked = append(kicked, id) })
	cert := cptest.Enroll(t, f, "cam-1")
	keep := cptest.Enroll(t, f, "cam-2")
	if err := f.Revoke("cam-1"); err != nil {
		t.Fatal(err)
	}
	if err := f.Revoke("nobody"); !errors.Is(err, fleet.ErrNotFound) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if len(kicked) != 1 || kicked[0] != "cam-1" {
		t.Fatalf("OnRevoke calls = %q", kicked)
	}
	f.Close()
	f = open(t, dir, c)
	if _, err := f.CheckCert(cert.Leaf); !errors.Is(err, fleet.ErrRevoked) {
		t.Fatalf("revoked after restart: %v", err)
	}
	if _, err := f.CheckCert(keep.Leaf); err != nil {
		t.Fatal(err)
	}
	crlPEM, err := f.CRL()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(crlPEM)
	crl, err := x509.ParseRevocationList(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(crl.RevokedCertificateEntries) != 1 || crl.RevokedCertificateEntries[0].SerialNumber.Cmp(cert.Leaf.SerialNumber) != 0 {
		t.Fatalf("CRL entries = %+v", crl.RevokedCertificateEntries)
	}
	ds, _ := f.Devices()
	if len(ds) != 2 || !ds[0].Revoked || ds[1].Revoked {
		t.Fatalf("devices = %+v", ds)
	}
	// Re-enrolling with a new token gives a working certificate again.
	again := cptest.Enroll(t, f, "cam-1")
	if _, err := f.CheckCert(again.Leaf); err != nil {
		t.Fatalf("re-enrolled: %v", err)
	}
	foreign := cptest.ForeignCert(t, "cam-1")
	if _, err := f.CheckCert(foreign.Leaf); !errors.Is(err, fleet.ErrUntrusted) {
		t.Fatalf("foreign cert: %v", err)
	}
	c.t = c.t.Add(400 * 24 * time.Hour)
	if _, err := f.CheckCert(keep.Leaf); !errors.Is(err, fleet.ErrUntrusted) {
		t.Fatalf("expired cert: %v", err)
	}
}

func TestAPITokensAndAudit(t *testing.T) {
	dir := t.TempDir()
	f := open(t, dir, &clock{time.Now()})
	path := filepath.Join(dir, "admin.token")
	if made, err := f.BootstrapAdmin(path); err != nil || !made {
		t.Fatalf("bootstrap: %v, %v", made, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin token file: %v %v", err, fi.Mode())
	}
	secret, _ := fleet.ReadTokenFile(path)
	if tok, err := f.Authenticate(secret); err != nil || tok.Role != fleet.RoleAdmin {
		t.Fatalf("admin token: %+v %v", tok, err)
	}
	if made, _ := f.BootstrapAdmin(path); made {
		t.Fatal("second bootstrap made another admin token")
	}
	v, err := f.CreateAPIToken("ci", fleet.RoleViewer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.CreateAPIToken("ci", fleet.RoleAdmin); !errors.Is(err, fleet.ErrConflict) {
		t.Fatalf("duplicate name: %v", err)
	}
	if _, err := f.CreateAPIToken("x", "root"); !errors.Is(err, fleet.ErrInvalid) {
		t.Fatalf("bad role: %v", err)
	}
	if err := f.DeleteAPIToken("ci"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Authenticate(v); !errors.Is(err, fleet.ErrTokenUnknown) {
		t.Fatalf("deleted token: %v", err)
	}
	for _, r := range []struct {
		have, need fleet.Role
		ok         bool
	}{{fleet.RoleViewer, fleet.RoleOperator, false}, {fleet.RoleOperator, fleet.RoleOperator, true}, {fleet.RoleAdmin, fleet.RoleViewer, true}, {"", fleet.RoleViewer, false}} {
		if r.have.Allows(r.need) != r.ok {
			t.Errorf("%q allows %q = %v", r.have, r.need, !r.ok)
		}
	}
	for i := range 7 {
		if err := f.Audit(fleet.AuditEntry{Actor: "admin", Action: "POST /x", Status: 200 + i, Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	log, err := f.AuditLog(100)
	if err != nil || len(log) != 5 || log[0].Status != 206 || log[4].Status != 202 {
		t.Fatalf("audit log (limit 5, newest first) = %+v, %v", log, err)
	}
}

func TestMosquittoConfig(t *testing.T) {
	f := open(t, t.TempDir(), &clock{time.Now()})
	dir := t.TempDir()
	if err := f.WriteMosquittoConfig(fleet.MosquittoOptions{Dir: dir, Listen: "127.0.0.1:18883"}); err != nil {
		t.Fatal(err)
	}
	conf, _ := os.ReadFile(filepath.Join(dir, fleet.MosquittoConf))
	for _, want := range []string{"listener 18883 127.0.0.1", "require_certificate true", "use_identity_as_username true",
		"use_username_as_clientid true", "crlfile ", "acl_file ", "allow_anonymous false"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("mosquitto.conf lacks %q:\n%s", want, conf)
		}
	}
	acl, _ := os.ReadFile(filepath.Join(dir, fleet.MosquittoACL))
	if !strings.Contains(string(acl), "pattern readwrite starling/v1/dev/%u/#") || !strings.Contains(string(acl), "user starling-control") {
		t.Errorf("acl:\n%s", acl)
	}
	if fi, _ := os.Stat(filepath.Join(dir, fleet.MosquittoKey)); fi.Mode().Perm() != 0o600 {
		t.Errorf("server.key mode %v", fi.Mode().Perm())
	}
	if err := f.WriteMosquittoConfig(fleet.MosquittoOptions{Dir: dir, Listen: "nope"}); !errors.Is(err, fleet.ErrOptions) {
		t.Fatalf("bad listen: %v", err)
	}
	if err := f.SyncMosquitto(dir, true); err == nil || !strings.Contains(err.Error(), "not running") {
		t.Fatalf("sync without a running broker: %v", err)
	}
}
