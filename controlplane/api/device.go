package api

import (
	"fmt"
	"net/http"

	"github.com/starling-edge/starling/controlplane/fleet"
)

// DeviceHandler is the API devices call, served on its own TLS listener
// (see controlplane.Options.DeviceAddr) whose certificate the agent pins:
//
//	POST /api/v1/enroll                  {token, csr} -> device certificate (no client certificate needed)
//	GET  /api/v1/device/self             the caller's identity
//	GET  /api/v1/device/artifacts/{digest}  an artifact, with Range support
//	GET  /api/v1/tuf/{name}               TUF metadata (same path as on the operator API)
//
// Every call but enroll needs a client certificate that the fleet accepts
// at the moment of the request: a revoked device is refused at once.
// Every enrollment attempt is audited.
func (a *API) DeviceHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/enroll", a.enroll)
	mux.HandleFunc("GET /api/v1/device/self", a.deviceAuth(func(w http.ResponseWriter, r *http.Request, id fleet.Identity) {
		writeJSON(w, http.StatusOK, map[string]string{"device_id": id.ID})
	}))
	mux.HandleFunc("GET /api/v1/device/artifacts/{digest}", a.deviceAuth(func(w http.ResponseWriter, r *http.Request, _ fleet.Identity) {
		a.getArtifact(w, r)
	}))
	mux.HandleFunc("GET /api/v1/tuf/{name}", a.deviceAuth(func(w http.ResponseWriter, r *http.Request, _ fleet.Identity) {
		a.getMetadata(w, r)
	}))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such device endpoint %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// deviceAuth checks the caller's client certificate on every request.
func (a *API) deviceAuth(h func(http.ResponseWriter, *http.Request, fleet.Identity)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.opts.Fleet == nil || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			writeError(w, http.StatusUnauthorized, "this call needs the device's client certificate (enroll first)")
			return
		}
		id, err := a.opts.Fleet.CheckCert(r.TLS.PeerCertificates[0])
		if err != nil {
			a.fleetError(w, r, err)
			return
		}
		if id.Control {
			writeError(w, http.StatusForbidden, "the control identity is not a device")
			return
		}
		h(w, r, id)
	}
}

type enrollRequest struct {
	Token string `json:"token"`
	CSR   string `json:"csr"` // PEM
}

// enroll redeems a one-time token for a certificate.
func (a *API) enroll(w http.ResponseWriter, r *http.Request) {
	if a.opts.Fleet == nil {
		writeError(w, http.StatusNotFound, "enrollment is not enabled on this control plane")
		return
	}
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	p := Principal{Name: "enroll-token"}
	defer func() { a.audit(r, p, rec) }()
	var req enrollRequest
	if !decodeJSON(rec, r, &req) {
		return
	}
	e, err := a.opts.Fleet.Enroll(req.Token, []byte(req.CSR))
	if err != nil {
		a.fleetError(rec, r, err)
		return
	}
	p.Name = "device:" + e.DeviceID
	writeJSON(rec, http.StatusCreated, e)
}
