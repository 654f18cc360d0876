package api

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/starling-edge/starling/controlplane/fleet"
)

// Authentication and authorization of the operator API.
//
// Every call but GET /api/v1/health needs "Authorization: Bearer <token>"
// with a token from the fleet (fleet.CreateAPIToken). A route's required
// role is in routeRoles; routes not listed need viewer to read (GET, HEAD)
// and operator to change anything. Every call that is not a read (and
// every refused one of them) is appended to the audit log, whatever its
// result.

// routeRoles maps a mux pattern to the role it needs.
var routeRoles = map[string]fleet.Role{
	"GET /api/v1/health":               "",
	"POST /api/v1/models":              fleet.RoleOperator,
	"PUT /api/v1/devices/{id}/desired": fleet.RoleOperator,
	"POST /api/v1/enroll-tokens":       fleet.RoleOperator,
	"POST /api/v1/devices/{id}/revoke": fleet.RoleAdmin,
	"GET /api/v1/identities":           fleet.RoleViewer,
	"GET /api/v1/tokens":               fleet.RoleAdmin,
	"POST /api/v1/tokens":              fleet.RoleAdmin,
	"DELETE /api/v1/tokens/{name}":     fleet.RoleAdmin,
	"GET /api/v1/audit":                fleet.RoleAdmin,
}

// requiredRole is what a request matched to pattern needs ("" for none).
func requiredRole(method, pattern string) fleet.Role {
	if r, ok := routeRoles[pattern]; ok {
		return r
	}
	if method == http.MethodGet || method == http.MethodHead {
		return fleet.RoleViewer
	}
	return fleet.RoleOperator
}

type principalKey struct{}

// Principal is who made a request.
type Principal struct {
	Name string     // API token name
	Role fleet.Role // its role
}

// principal returns the request's authenticated caller ("" without auth).
func principal(r *http.Request) Principal {
	p, _ := r.Context().Value(principalKey{}).(Principal)
	return p
}

// bearer extracts a bearer token.
func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || subtle.ConstantTimeCompare([]byte(strings.ToLower(h[:7])), []byte("bearer ")) != 1 {
		return "", false
	}
	tok := strings.TrimSpace(h[7:])
	return tok, tok != ""
}

// serveAuthorized authenticates, authorizes and audits, then serves.
func (a *API) serveAuthorized(w http.ResponseWriter, r *http.Request) {
	f := a.opts.Fleet
	if f == nil {
		a.mux.ServeHTTP(w, r)
		return
	}
	_, pattern := a.mux.Handler(r)
	need := requiredRole(r.Method, pattern)
	if r.Method == http.MethodHead {
		need = requiredRole(http.MethodGet, strings.Replace(pattern, "HEAD ", "GET ", 1))
	}
	audited := r.Method != http.MethodGet && r.Method != http.MethodHead && pattern != "" && !strings.HasPrefix(pattern, "/")
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	p := Principal{Name: "anonymous"}
	defer func() {
		if audited {
			a.audit(r, p, rec)
		}
	}()
	if need == "" {
		a.mux.ServeHTTP(rec, r)
		return
	}
	tok, ok := bearer(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="starling"`)
		writeError(rec, http.StatusUnauthorized, "this call needs an API token: send \"Authorization: Bearer <token>\" (starlingctl: --token, --token-file, $STARLING_TOKEN or $STARLING_TOKEN_FILE)")
		return
	}
	t, err := f.Authenticate(tok)
	if errors.Is(err, fleet.ErrTokenUnknown) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="starling", error="invalid_token"`)
		writeError(rec, http.StatusUnauthorized, "the API token is not valid (deleted or mistyped); ask an admin for one")
		return
	}
	if err != nil {
		a.internalError(rec, r, err)
		return
	}
	p = Principal{Name: t.Name, Role: t.Role}
	if !t.Role.Allows(need) {
		writeError(rec, http.StatusForbidden, fmt.Sprintf("token %q has role %s; %s %s needs %s", t.Name, t.Role, r.Method, r.URL.Path, need))
		return
	}
	a.mux.ServeHTTP(rec, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
}

// audit records one state-changing call.
func (a *API) audit(r *http.Request, p Principal, rec *recorder) {
	result := "ok"
	if rec.status >= 400 {
		var e errorBody
		if json.Unmarshal(rec.errBody.Bytes(), &e) == nil && e.Error != "" {
			result = e.Error
		} else {
			result = http.StatusText(rec.status)
		}
	}
	err := a.opts.Fleet.Audit(fleet.AuditEntry{
		Actor: p.Name, Role: string(p.Role), Action: r.Method + " " + r.URL.Path,
		Status: rec.status, Result: result, Remote: r.RemoteAddr,
	})
	if err != nil {
		a.log.Error("audit log write failed", "action", r.Method+" "+r.URL.Path, "actor", p.Name, "err", err)
	}
}

// recorder keeps the status and the start of an error body for the audit.
type recorder struct {
	http.ResponseWriter
	status  int
	wrote   bool
	errBody bytes.Buffer
}

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(b []byte) (int, error) {
	if !r.wrote {
		r.wrote = true
	}
	if r.status >= 400 && r.errBody.Len() < 4096 {
		r.errBody.Write(b[:min(len(b), 4096-r.errBody.Len())])
	}
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the real writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// identityRoutes registers the fleet identity endpoints of the operator API.
func (a *API) identityRoutes() {
	if a.opts.Fleet == nil {
		return
	}
	a.handle("/api/v1/enroll-tokens", map[string]http.HandlerFunc{"POST": a.newEnrollToken})
	a.handle("/api/v1/devices/{id}/revoke", map[string]http.HandlerFunc{"POST": a.revoke})
	a.handle("/api/v1/identities", map[string]http.HandlerFunc{"GET": a.identities})
	a.handle("/api/v1/tokens", map[string]http.HandlerFunc{"GET": a.listTokens, "POST": a.createToken})
	a.handle("/api/v1/tokens/{name}", map[string]http.HandlerFunc{"DELETE": a.deleteToken})
	a.handle("/api/v1/audit", map[string]http.HandlerFunc{"GET": a.auditLog})
}

// decodeJSON reads a bounded JSON body into v; on failure it has answered.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("request body is not the expected JSON: %v", err))
		return false
	}
	return true
}

// fleetError maps a fleet sentinel to an answer.
func (a *API) fleetError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, fleet.ErrInvalid), errors.Is(err, fleet.ErrCSR):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, fleet.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, fleet.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, fleet.ErrTokenUnknown), errors.Is(err, fleet.ErrTokenExpired), errors.Is(err, fleet.ErrTokenUsed):
		writeError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, fleet.ErrRevoked), errors.Is(err, fleet.ErrUntrusted):
		writeError(w, http.StatusForbidden, err.Error())
	default:
		a.internalError(w, r, err)
	}
}

type enrollTokenRequest struct {
	DeviceID string `json:"device_id,omitempty"`
	TTL      string `json:"ttl,omitempty"` // Go duration; default 1h
}

type enrollTokenResponse struct {
	Token       string    `json:"token"`
	DeviceID    string    `json:"device_id,omitempty"`
	Expires     time.Time `json:"expires"`
	Fingerprint string    `json:"ca_fingerprint"`
}

func (a *API) newEnrollToken(w http.ResponseWriter, r *http.Request) {
	var req enrollTokenRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		var err error
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("ttl %.40q: want a positive duration such as 30m or 24h", req.TTL))
			return
		}
	}
	tok, exp, err := a.opts.Fleet.NewEnrollToken(req.DeviceID, ttl, principal(r).Name)
	if err != nil {
		a.fleetError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, enrollTokenResponse{Token: tok, DeviceID: req.DeviceID, Expires: exp, Fingerprint: a.opts.Fleet.Fingerprint()})
}

func (a *API) revoke(w http.ResponseWriter, r *http.Request) {
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	if err := a.opts.Fleet.Revoke(id); err != nil {
		a.fleetError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"device_id": id, "revoked": true})
}

func (a *API) identities(w http.ResponseWriter, r *http.Request) {
	ds, err := a.opts.Fleet.Devices()
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	if ds == nil {
		ds = []fleet.Device{}
	}
	writeJSON(w, http.StatusOK, ds)
}

type tokenRequest struct {
	Name string     `json:"name"`
	Role fleet.Role `json:"role"`
}

func (a *API) createToken(w http.ResponseWriter, r *http.Request) {
	var req tokenRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	secret, err := a.opts.Fleet.CreateAPIToken(req.Name, req.Role)
	if err != nil {
		a.fleetError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]string{"name": req.Name, "role": string(req.Role), "token": secret})
}

func (a *API) listTokens(w http.ResponseWriter, r *http.Request) {
	ts, err := a.opts.Fleet.APITokens()
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	if ts == nil {
		ts = []fleet.APIToken{}
	}
	writeJSON(w, http.StatusOK, ts)
}

func (a *API) deleteToken(w http.ResponseWriter, r *http.Request) {
	if err := a.opts.Fleet.DeleteAPIToken(r.PathValue("name")); err != nil {
		a.fleetError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) auditLog(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 10000 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %.20q: want 1-10000", s))
			return
		}
		limit = n
	}
	log, err := a.opts.Fleet.AuditLog(limit)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	if log == nil {
		log = []fleet.AuditEntry{}
	}
	writeJSON(w, http.StatusOK, log)
}
