package controlplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/starling-edge/starling/controlplane/broker"
	"github.com/starling-edge/starling/controlplane/fleet"
)

// AdminTokenFile is where the first start writes the bootstrap admin API
// token (0600), inside DataDir.
const AdminTokenFile = "admin.token"

// openFleet opens DataDir/fleet and makes the bootstrap admin token on
// the first start.
func openFleet(opts Options) (*fleet.Fleet, error) {
	f, err := fleet.Open(fleet.Options{Dir: filepath.Join(opts.DataDir, "fleet"), Logger: opts.Logger.With("component", "fleet")})
	if err != nil {
		return nil, err
	}
	path := filepath.Join(opts.DataDir, AdminTokenFile)
	made, err := f.BootstrapAdmin(path)
	if err != nil {
		f.Close()
		return nil, err
	}
	if made {
		opts.Logger.Warn("created the bootstrap admin API token; keep it secret", "file", path)
	}
	return f, nil
}

// Fleet returns the fleet identity store (CA, tokens, revocation).
func (s *Server) Fleet() *fleet.Fleet { return s.fleet }

// checker adapts the fleet's certificate check for the broker hook.
func checker(f *fleet.Fleet) broker.CertChecker {
	return func(c *x509.Certificate) (broker.Identity, error) {
		id, err := f.CheckCert(c)
		return broker.Identity{ID: id.ID, Control: id.Control}, err
	}
}

// serverTLS is the TLS configuration of the embedded broker and the
// device API: a server certificate from the fleet CA, client
// certificates from the fleet CA checked (revocation included) during the
// handshake.
func (s *Server) serverTLS(clientAuth tls.ClientAuthType) (*tls.Config, error) {
	cert, err := s.fleet.ServerCert()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates:     []tls.Certificate{cert},
		ClientAuth:       clientAuth,
		ClientCAs:        s.fleet.CAPool(),
		VerifyConnection: s.fleet.VerifyConnection,
		MinVersion:       tls.VersionTLS12,
	}, nil
}

// startEmbeddedBrokerLocked starts the embedded broker with the fleet's
// ACL hook; revocations disconnect the device at once.
func (s *Server) startEmbeddedBrokerLocked() error {
	tc, err := s.serverTLS(tls.RequireAndVerifyClientCert)
	if err != nil {
		return err
	}
	hook := &broker.FleetHook{Check: checker(s.fleet), Logger: s.log.With("component", "broker")}
	b, err := broker.Start(broker.Options{
		Addr: s.opts.MQTTAddr, TLSConfig: tc, InsecureAddr: s.opts.InsecureMQTTAddr,
		Auth: hook, Logger: s.log.With("component", "broker"),
	})
	if err != nil {
		return err
	}
	if s.opts.InsecureMQTTAddr != "" {
		s.log.Warn("INSECURE development MQTT listener without authentication or ACLs is open", "url", b.InsecureURL())
	}
	s.fleet.OnRevoke(func(id string) {
		if n := hook.Kick(id); n > 0 {
			s.log.Info("disconnected revoked device", "device", id, "connections", n)
		}
	})
	s.broker = b
	return nil
}

// linkTLS is the control plane's client TLS for an mqtts:// broker: its
// own fleet identity, trusting the fleet CA (which signed the embedded
// broker's and the generated Mosquitto configuration's certificates).
func (s *Server) linkTLS() (*tls.Config, error) {
	cert, err := s.fleet.ControlCert()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: s.fleet.CAPool(), MinVersion: tls.VersionTLS12}, nil
}

// watchMosquitto keeps the CRL and ACL files of a generated Mosquitto
// configuration current and reloads the broker after each revocation.
func (s *Server) watchMosquitto() error {
	dir := s.opts.MosquittoDir
	if dir == "" {
		return nil
	}
	if err := s.fleet.SyncMosquitto(dir, false); err != nil {
		return err
	}
	s.fleet.OnRevoke(func(id string) {
		if err := s.fleet.SyncMosquitto(dir, true); err != nil {
			s.log.Error("revoked device may stay connected to Mosquitto: reload failed; reload it by hand (kill -HUP)", "device", id, "err", err)
		}
	})
	return nil
}

// startDeviceAPILocked serves the device API (enrollment, device calls)
// over TLS on DeviceAddr.
func (s *Server) startDeviceAPILocked(h http.Handler) error {
	if s.opts.DeviceAddr == "" {
		return nil
	}
	tc, err := s.serverTLS(tls.VerifyClientCertIfGiven)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", s.opts.DeviceAddr)
	if err != nil {
		return fmt.Errorf("listen for the device API on %s: %w", s.opts.DeviceAddr, err)
	}
	s.deviceLn = ln
	s.deviceSrv = &http.Server{Handler: h, TLSConfig: tc, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	s.deviceDone = make(chan struct{})
	go func() {
		defer close(s.deviceDone)
		if err := s.deviceSrv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("device api server stopped", "err", err)
		}
	}()
	return nil
}

// DeviceURL returns "https://host:port" of the device API ("" without one).
func (s *Server) DeviceURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deviceLn == nil {
		return ""
	}
	return "https://" + s.deviceLn.Addr().String()
}

// InsecureBrokerURL returns "mqtt://host:port" of the embedded broker's
// development listener without authentication ("" without one).
func (s *Server) InsecureBrokerURL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broker == nil {
		return ""
	}
	return s.broker.InsecureURL()
}
