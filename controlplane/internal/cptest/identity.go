package cptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/starling-edge/starling/controlplane/fleet"
)

// CSR makes a fresh device key and a PEM certificate request naming id
// (the common name may be empty).
func CSR(tb testing.TB, id string) (*ecdsa.PrivateKey, []byte) {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: id}}, key)
	if err != nil {
		tb.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// Enroll enrolls device id with the fleet through a fresh token, as the
// agent does, and returns its TLS client certificate.
func Enroll(tb testing.TB, f *fleet.Fleet, id string) tls.Certificate {
	tb.Helper()
	tok, _, err := f.NewEnrollToken(id, time.Hour, "test")
	if err != nil {
		tb.Fatal(err)
	}
	key, csr := CSR(tb, id)
	e, err := f.Enroll(tok, csr)
	if err != nil {
		tb.Fatal(err)
	}
	return KeyPair(tb, key, []byte(e.Certificate))
}

// KeyPair joins a key and a PEM certificate.
func KeyPair(tb testing.TB, key *ecdsa.PrivateKey, certPEM []byte) tls.Certificate {
	tb.Helper()
	b, _ := pem.Decode(certPEM)
	if b == nil {
		tb.Fatalf("certificate is not PEM: %q", certPEM)
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: key, Leaf: leaf}
}

// ForeignCert is a client certificate for id from a CA no fleet trusts,
// shaped exactly like a fleet device certificate.
func ForeignCert(tb testing.TB, id string) tls.Certificate {
	tb.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: "Starling fleet CA"}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse("urn:starling:device:" + id)
	leaf := &x509.Certificate{SerialNumber: bigOne(), Subject: pkix.Name{CommonName: id}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, URIs: []*url.URL{u},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	return KeyPair(tb, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

// Dial connects an MQTT client over TLS ("mqtts://host:port") with the
// given client certificate (none when cert is nil), trusting only pool.
// It returns the connect error instead of failing, for refusal tests; lost
// is signalled when the broker drops the connection later.
func Dial(tb testing.TB, brokerURL, clientID string, cert *tls.Certificate, pool *x509.CertPool) (c paho.Client, lost <-chan struct{}, err error) {
	tb.Helper()
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	u, err := url.Parse(brokerURL)
	if err != nil {
		tb.Fatal(err)
	}
	lostc := make(chan struct{})
	o := paho.NewClientOptions().
		AddBroker("ssl://" + u.Host).
		SetClientID(clientID).
		SetTLSConfig(tc).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).
		SetOrderMatters(true).
		SetConnectionLostHandler(func(paho.Client, error) { close(lostc) })
	c = paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		tb.Fatalf("connect %s as %s: no answer", brokerURL, clientID)
	}
	if err := tok.Error(); err != nil {
		return nil, nil, err
	}
	tb.Cleanup(func() { c.Disconnect(50) })
	return c, lostc, nil
}

func bigOne() *big.Int { return big.NewInt(1) }

var (
	tokensMu sync.Mutex
	tokens   = map[string]string{} // API base URL -> bearer token
)

// UseToken makes Do (and Upload) send token as a bearer token to every
// URL under base ("http://host:port").
func UseToken(base, token string) {
	tokensMu.Lock()
	tokens[base] = token
	tokensMu.Unlock()
}

func tokenFor(u string) string {
	tokensMu.Lock()
	defer tokensMu.Unlock()
	for base, tok := range tokens {
		if strings.HasPrefix(u, base+"/") || u == base {
			return tok
		}
	}
	return ""
}
