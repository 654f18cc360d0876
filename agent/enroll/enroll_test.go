package enroll

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA is a fleet CA for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test fleet CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) issue(tmpl *x509.Certificate, pub any) ([]byte, error) {
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// deviceCert is what the control plane issues (controlplane/fleet's
// device template).
func (ca *testCA) deviceCert(id string, pub any) ([]byte, error) {
	u, _ := url.Parse(uriDevicePrefix + id)
	return ca.issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: id}, URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}, pub)
}

// server is an in-process stand-in for the control plane's device API
// with the same enrollment contract (one-time tokens, 403 messages naming
// the case), plus fault switches for answers the real one never gives.
// The real control plane is exercised end to end in tools/e2e.
type server struct {
	ca  *testCA
	srv *httptest.Server

	mu       sync.Mutex
	tokens   map[string]string // token -> "ok", "used", "expired"
	requests int
	fail     int    // answer 503 to this many requests first
	wrongKey bool   // issue the certificate over another key
	wrongID  string // issue the certificate for this id instead
}

func newServer(t *testing.T, ca *testCA) *server {
	t.Helper()
	s := &server{ca: ca, tokens: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+EnrollPath, s.enroll)
	mux.HandleFunc("GET /self", func(w http.ResponseWriter, r *http.Request) {
		if len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", 401)
			return
		}
		io.WriteString(w, r.TLS.PeerCertificates[0].Subject.CommonName)
	})
	s.srv = httptest.NewUnstartedServer(mux)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, err := ca.issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: "127.0.0.1"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, &key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(leaf)
	s.srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{b.Bytes, ca.cert.Raw}, PrivateKey: key}},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    poolOf(ca.cert),
	}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *server) enroll(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	answer := func(code int, msg string) {
		w.WriteHeader(code)
		json.NewEncoder(w).Encode(map[string]string{"error": msg})
	}
	if s.fail > 0 {
		s.fail--
		answer(503, "try later")
		return
	}
	var req struct{ Token, CSR string }
	json.NewDecoder(r.Body).Decode(&req)
	switch s.tokens[req.Token] {
	case "":
		answer(403, "fleet: unknown token: the enrollment token is not one this control plane issued")
		return
	case "used":
		answer(403, "fleet: enrollment token already used: it was redeemed at ...")
		return
	case "expired":
		answer(403, "fleet: enrollment token expired: it expired at ...")
		return
	}
	b, _ := pem.Decode([]byte(req.CSR))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		answer(400, "bad certificate request")
		return
	}
	s.tokens[req.Token] = "used"
	pub, id := csr.PublicKey, csr.Subject.CommonName
	if s.wrongKey {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub = &k.PublicKey
	}
	if s.wrongID != "" {
		id = s.wrongID
	}
	cert, err := s.ca.deviceCert(id, pub)
	if err != nil {
		answer(500, err.Error())
		return
	}
	w.WriteHeader(201)
	json.NewEncoder(w).Encode(map[string]string{"device_id": id, "certificate": string(cert), "ca": string(s.ca.pem)})
}

func (s *server) token(state string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	tok := "stl-enroll-" + state + "-" + big.NewInt(int64(len(s.tokens))).String()
	s.tokens[tok] = state
	return tok
}

func (s *server) requestCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestEnrollOnceThenReuse(t *testing.T) {
	ca := newCA(t)
	s := newServer(t, ca)
	for _, tc := range []struct {
		name string
		pin  func(o *Options)
	}{
		{"ca file", func(o *Options) { o.CAPEM = ca.pem }},
		{"fingerprint", func(o *Options) { o.CAFingerprint = strings.ToUpper(fingerprint(ca.cert)) }},
		{"both", func(o *Options) { o.CAPEM, o.CAFingerprint = ca.pem, fingerprint(ca.cert) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "identity")
			opts := Options{Dir: dir, URL: s.srv.URL, Token: s.token("ok"), DeviceID: "cam-1", Logger: quiet()}
			tc.pin(&opts)
			id, enrolled, err := Ensure(context.Background(), opts)
			if err != nil || !enrolled {
				t.Fatalf("enroll: %v (enrolled %v)", err, enrolled)
			}
			if id.DeviceID != "cam-1" || !id.CA.Equal(ca.cert) {
				t.Fatalf("identity %q CA %q", id.DeviceID, id.CA.Subject.CommonName)
			}
			st, err := os.Stat(filepath.Join(dir, KeyFile))
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v mode %v, want 0600", err, st.Mode())
			}
			if st, _ := os.Stat(dir); st.Mode().Perm() != 0o700 {
				t.Fatalf("identity dir mode %v, want 0700", st.Mode())
			}
			// A restart reuses the identity: no token, no request.
			before := s.requestCount()
			again, enrolled, err := Ensure(context.Background(), Options{Dir: dir, DeviceID: "cam-1", Logger: quiet()})
			if err != nil || enrolled || !again.Leaf.Equal(id.Leaf) {
				t.Fatalf("restart: %v enrolled %v", err, enrolled)
			}
			// Even with the (now spent) token still configured.
			if _, enrolled, err := Ensure(context.Background(), opts); err != nil || enrolled {
				t.Fatalf("restart with the old token: %v enrolled %v", err, enrolled)
			}
			if n := s.requestCount() - before; n != 0 {
				t.Fatalf("restart made %d enrollment requests", n)
			}
			// The identity authenticates to the device API.
			resp, err := id.HTTPClient(5 * time.Second).Get(s.srv.URL + "/self")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "cam-1" {
				t.Fatalf("device API saw %q", b)
			}
		})
	}
}

func TestEnrollRefusals(t *testing.T) {
	ca := newCA(t)
	other := newCA(t)
	s := newServer(t, ca)
	for _, tc := range []struct {
		name   string
		opts   func() Options
		want   error
		msg    string
		noSend bool // the token must not reach the server
	}{
		{"replayed token", func() Options { return Options{Token: s.token("used"), CAPEM: ca.pem} }, ErrTokenUsed, "already used", false},
		{"expired token", func() Options { return Options{Token: s.token("expired"), CAPEM: ca.pem} }, ErrTokenExpired, "expired", false},
		{"unknown token", func() Options { return Options{Token: "stl-enroll-forged", CAPEM: ca.pem} }, ErrTokenUnknown, "not one this control plane issued", false},
		{"wrong CA file", func() Options { return Options{Token: s.token("ok"), CAPEM: other.pem} }, ErrPin, "pinned CA", true},
		{"wrong fingerprint", func() Options { return Options{Token: s.token("ok"), CAFingerprint: fingerprint(other.cert)} }, ErrPin, "no CA with fingerprint", true},
		{"no pin", func() Options { return Options{Token: s.token("ok")} }, ErrOptions, "--ca-file or --ca-fingerprint", true},
		{"CA file and fingerprint disagree", func() Options {
			return Options{Token: s.token("ok"), CAPEM: ca.pem, CAFingerprint: fingerprint(other.cert)}
		}, ErrOptions, "not the given", true},
		{"malformed fingerprint", func() Options { return Options{Token: s.token("ok"), CAFingerprint: "sha256:abc"} }, ErrOptions, "64 hex", true},
		{"plain http URL", func() Options {
			return Options{Token: s.token("ok"), CAPEM: ca.pem, URL: strings.Replace(s.srv.URL, "https", "http", 1)}
		}, ErrOptions, "want https://", true},
		{"no token", func() Options { return Options{CAPEM: ca.pem} }, ErrNotEnrolled, "--enroll-token", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			o := tc.opts()
			o.Dir, o.DeviceID, o.Logger = dir, "cam-2", quiet()
			if o.URL == "" {
				o.URL = s.srv.URL
			}
			before := s.requestCount()
			_, _, err := Ensure(context.Background(), o)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v mentioning %q", err, tc.want, tc.msg)
			}
			if sent := s.requestCount() - before; tc.noSend && sent != 0 {
				t.Fatalf("%d requests reached the server", sent)
			}
			if _, err := os.Stat(filepath.Join(dir, CertFile)); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a certificate was stored after a refusal: %v", err)
			}
			if _, err := Load(dir); !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("Load after a refusal: %v", err)
			}
		})
	}
}

func TestEnrollBadAnswers(t *testing.T) {
	ca := newCA(t)
	s := newServer(t, ca)
	for _, tc := range []struct {
		name  string
		fault func()
		msg   string
	}{
		{"certificate for another key", func() { s.wrongKey = true }, "not for this device's key"},
		{"certificate for another device", func() { s.wrongID = "cam-9" }, `not "cam-3"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s.mu.Lock()
			s.wrongKey, s.wrongID = false, ""
			tc.fault()
			s.mu.Unlock()
			dir := t.TempDir()
			_, _, err := Ensure(context.Background(), Options{Dir: dir, URL: s.srv.URL, Token: s.token("ok"), DeviceID: "cam-3", CAPEM: ca.pem, Logger: quiet()})
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrRefused mentioning %q", err, tc.msg)
			}
			if _, err := Load(dir); !errors.Is(err, ErrNotEnrolled) {
				t.Fatalf("Load after a bad answer: %v", err)
			}
		})
	}
}

// TestEnrollRetriesTransientFailures: 503s are retried with the same key;
// the key made for the first attempt is the one certified.
func TestEnrollRetriesTransientFailures(t *testing.T) {
	ca := newCA(t)
	s := newServer(t, ca)
	s.fail = 2
	dir := t.TempDir()
	id, enrolled, err := Ensure(context.Background(), Options{
		Dir: dir, URL: s.srv.URL, Token: s.token("ok"), DeviceID: "cam-4", CAPEM: ca.pem, Logger: quiet(),
		Backoff: func(int) time.Duration { return time.Millisecond },
	})
	if err != nil || !enrolled || id.DeviceID != "cam-4" {
		t.Fatalf("%v enrolled %v", err, enrolled)
	}
	if n := s.requestCount(); n != 3 {
		t.Fatalf("%d requests, want 3 (two 503s, then success)", n)
	}
	// An unreachable control plane is retried until ctx ends.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, _, err = Ensure(ctx, Options{
		Dir: t.TempDir(), URL: "https://127.0.0.1:1", Token: "stl-enroll-x", CAPEM: ca.pem, Logger: quiet(),
		Backoff: func(int) time.Duration { return 10 * time.Millisecond },
	})
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("unreachable: %v", err)
	}
}

func TestStoredIdentityChecks(t *testing.T) {
	ca := newCA(t)
	s := newServer(t, ca)
	dir := t.TempDir()
	if _, _, err := Ensure(context.Background(), Options{Dir: dir, URL: s.srv.URL, Token: s.token("ok"), DeviceID: "cam-5", CAPEM: ca.pem, Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	// A configured device id that disagrees with the certificate.
	if _, _, err := Ensure(context.Background(), Options{Dir: dir, DeviceID: "cam-6"}); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), `for device "cam-5", not "cam-6"`) {
		t.Fatalf("id mismatch: %v", err)
	}
	for _, tc := range []struct {
		name string
		file string
		data []byte
		msg  string
	}{
		{"key replaced", KeyFile, nil, "not for this device's key"},
		{"key garbage", KeyFile, []byte("junk"), "not a PEM private key"},
		{"CA replaced", CAFile, newCA(t).pem, "does not verify"},
		{"certificate garbage", CertFile, []byte("junk"), "not a PEM certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := t.TempDir()
			for _, f := range []string{KeyFile, CertFile, CAFile} {
				b, _ := os.ReadFile(filepath.Join(dir, f))
				os.WriteFile(filepath.Join(d, f), b, 0o600)
			}
			data := tc.data
			if data == nil {
				k, _ := loadOrCreateKey(filepath.Join(t.TempDir(), KeyFile))
				der, _ := x509.MarshalPKCS8PrivateKey(k)
				data = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
			}
			os.WriteFile(filepath.Join(d, tc.file), data, 0o600)
			if _, err := Load(d); !errors.Is(err, ErrIdentity) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrIdentity mentioning %q", err, tc.msg)
			}
		})
	}
}

func TestParseFingerprint(t *testing.T) {
	const hex64 = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	for _, tc := range []struct {
		in, want string
	}{
		{"sha256:" + hex64, "sha256:" + hex64},
		{strings.ToUpper(hex64), "sha256:" + hex64},
		{"SHA256:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff", "sha256:" + hex64},
		{"sha256:" + hex64[:62], ""},
		{"md5:" + hex64, ""},
		{"", ""},
	} {
		got, err := ParseFingerprint(tc.in)
		if got != tc.want || (tc.want == "") != errors.Is(err, ErrOptions) {
			t.Errorf("ParseFingerprint(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
