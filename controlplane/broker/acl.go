package broker

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"strings"
	"sync"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/starling-edge/starling/shared/wire"
)

// Identity is whose client certificate a connection presented.
type Identity struct {
	// ID is the device id (or the control plane's name).
	ID string
	// Control grants rights over every device's topics.
	Control bool
}

// CertChecker verifies a client certificate (issuer, validity,
// revocation) and says whose it is. The control plane passes the fleet's.
type CertChecker func(*x509.Certificate) (Identity, error)

// FleetHook is the embedded broker's authentication and ACL hook:
//   - on the TLS listener a client must present a certificate that Check
//     accepts; a device's MQTT client id must be its device id (so no
//     device can take over another's session), the control identity may
//     use any client id;
//   - a device may publish and subscribe only under
//     starling/v1/dev/{its-id}/ (no wildcard above that level); the
//     control identity may use every topic;
//   - Kick disconnects a revoked device at once, and its later checks fail;
//   - clients of the insecure development listener may do anything.
//
// The identity comes only from the certificate, never from the client id
// or user name a client sends.
type FleetHook struct {
	mqtt.HookBase
	// Check is required.
	Check CertChecker
	// Logger receives refused connections; default: discard.
	Logger *slog.Logger

	srv *mqtt.Server // set by Start

	mu      sync.Mutex
	clients map[*mqtt.Client]*session
}

type session struct {
	id      Identity
	revoked bool
}

var _ mqtt.Hook = (*FleetHook)(nil)

// ID implements mqtt.Hook.
func (h *FleetHook) ID() string { return "starling-fleet-acl" }

// Provides implements mqtt.Hook.
func (h *FleetHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck || b == mqtt.OnDisconnect
}

func (h *FleetHook) logger() *slog.Logger {
	if h.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return h.Logger
}

// OnConnectAuthenticate implements mqtt.Hook.
func (h *FleetHook) OnConnectAuthenticate(cl *mqtt.Client, _ packets.Packet) bool {
	if cl.Net.Listener == ListenerInsecure {
		return true
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok || h.Check == nil {
		h.logger().Warn("refusing a client without TLS", "remote", cl.Net.Remote, "client", cl.ID)
		return false
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		h.logger().Warn("refusing a client without a certificate", "remote", cl.Net.Remote, "client", cl.ID)
		return false
	}
	id, err := h.Check(certs[0])
	if err != nil {
		h.logger().Warn("refusing a client certificate", "remote", cl.Net.Remote, "client", cl.ID, "err", err)
		return false
	}
	if !id.Control && cl.ID != id.ID {
		h.logger().Warn("refusing a device that uses another client id", "device", id.ID, "client", cl.ID)
		return false
	}
	h.mu.Lock()
	if h.clients == nil {
		h.clients = map[*mqtt.Client]*session{}
	}
	h.clients[cl] = &session{id: id}
	h.mu.Unlock()
	return true
}

// OnDisconnect implements mqtt.Hook.
func (h *FleetHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	delete(h.clients, cl)
	h.mu.Unlock()
}

// OnACLCheck implements mqtt.Hook. topic is a topic name on publish and
// delivery, a topic filter on subscribe.
func (h *FleetHook) OnACLCheck(cl *mqtt.Client, topic string, _ bool) bool {
	if cl.Net.Listener == ListenerInsecure {
		return true
	}
	h.mu.Lock()
	s := h.clients[cl]
	h.mu.Unlock()
	if s == nil || s.revoked {
		return false
	}
	if s.id.Control {
		return true
	}
	return DeviceMayUse(s.id.ID, topic)
}

// DeviceMayUse reports whether a device may publish to, or subscribe with,
// topic: only its own subtree, named literally down to the device level.
func DeviceMayUse(deviceID, topic string) bool {
	rest, ok := strings.CutPrefix(topic, wire.Prefix+deviceID+"/")
	return ok && rest != "" && wire.ValidDeviceID(deviceID)
}

// Kick disconnects every connection of a device and makes their further
// checks fail; the broker's own certificate check refuses it from then on.
func (h *FleetHook) Kick(deviceID string) int {
	h.mu.Lock()
	var kicked []*mqtt.Client
	for cl, s := range h.clients {
		if !s.id.Control && s.id.ID == deviceID {
			s.revoked = true
			kicked = append(kicked, cl)
		}
	}
	srv := h.srv
	h.mu.Unlock()
	for _, cl := range kicked {
		if srv != nil {
			srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		} else {
			cl.Stop(packets.ErrNotAuthorized)
		}
	}
	return len(kicked)
}
