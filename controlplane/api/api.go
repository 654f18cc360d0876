// Package api is the control plane's REST API (JSON over net/http): the
// model registry (publish signed models, list them), the device registry
// (state, events, desired models) and artifact downloads with HTTP range
// support. Every error answer is {"error":"..."} with a fitting status.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"time"

	"github.com/starling-edge/starling/controlplane/fleet"
	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/controlplane/tufrepo"
	"github.com/starling-edge/starling/shared/wire"
)

// DesiredSetter changes a device's desired models and delivers them.
// SetDesired returns a wrapped store.ErrNotFound for an unknown device or
// model version; DeliveryError (if set) classifies the other errors.
type DesiredSetter interface {
	SetDesired(ctx context.Context, deviceID string, refs []store.ModelRef) (wire.DesiredState, error)
}

// Options configures the API.
type Options struct {
	// Store and Artifacts are required.
	Store     store.Store
	Artifacts *store.Artifacts
	// Desired is required: it stores and publishes desired states.
	Desired DesiredSetter
	// Repo is the TUF repository: model pushes carry targets metadata
	// that it checks and stores, and it serves metadata to devices.
	// Required.
	Repo *tufrepo.Repo
	// NotDelivered reports whether a SetDesired error means "stored but not
	// yet delivered" (answered 503) rather than a failure (500). Default:
	// never.
	NotDelivered func(error) bool
	// MaxUpload caps a published artifact's size in bytes; default 512 MiB.
	// The upload streams to disk, so the cost is disk, not memory.
	MaxUpload int64
	// EventLimit caps the events one request returns; default 100.
	EventLimit int
	// Fleet turns on API tokens with roles, the audit log and the fleet
	// identity endpoints (enroll tokens, revocation, API tokens, audit).
	// IMPORTANT: without it every call is allowed; the control plane always
	// sets it (nil is for tests of the registry alone).
	Fleet *fleet.Fleet
	// Logger default: discard.
	Logger *slog.Logger
	// Now is the clock used for metadata expiry; default time.Now.
	Now func() time.Time
}

// DefaultMaxUpload is the default cap on an artifact upload.
const DefaultMaxUpload = 512 << 20

// maxMetadata caps the signed metadata part of an upload.
const maxMetadata = 1 << 20

// maxJSONBody caps JSON request bodies.
const maxJSONBody = 1 << 20

// API serves the REST API.
type API struct {
	opts Options
	log  *slog.Logger
	mux  *http.ServeMux
}

var _ http.Handler = (*API)(nil)

// New checks opts and builds the routes.
func New(opts Options) (*API, error) {
	switch {
	case opts.Store == nil:
		return nil, fmt.Errorf("%w: Store is required", ErrOptions)
	case opts.Artifacts == nil:
		return nil, fmt.Errorf("%w: Artifacts is required", ErrOptions)
	case opts.Desired == nil:
		return nil, fmt.Errorf("%w: Desired is required", ErrOptions)
	case opts.Repo == nil:
		return nil, fmt.Errorf("%w: Repo (the TUF repository) is required", ErrOptions)
	}
	if opts.MaxUpload <= 0 {
		opts.MaxUpload = DefaultMaxUpload
	}
	if opts.EventLimit <= 0 {
		opts.EventLimit = 100
	}
	if opts.NotDelivered == nil {
		opts.NotDelivered = func(error) bool { return false }
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &API{opts: opts, log: opts.Logger, mux: http.NewServeMux()}
	a.routes()
	return a, nil
}

func (a *API) routes() {
	a.handle("/api/v1/health", map[string]http.HandlerFunc{"GET": a.health})
	a.handle("/api/v1/models", map[string]http.HandlerFunc{"GET": a.listModels, "POST": a.publishModel})
	a.handle("/api/v1/models/{name}/versions/{version}", map[string]http.HandlerFunc{"GET": a.getModel})
	a.handle("/api/v1/devices", map[string]http.HandlerFunc{"GET": a.listDevices})
	a.handle("/api/v1/devices/{id}", map[string]http.HandlerFunc{"GET": a.getDevice})
	a.handle("/api/v1/devices/{id}/events", map[string]http.HandlerFunc{"GET": a.deviceEvents})
	a.handle("/api/v1/devices/{id}/desired", map[string]http.HandlerFunc{"PUT": a.putDesired})
	a.handle("/api/v1/artifacts/{digest}", map[string]http.HandlerFunc{"GET": a.getArtifact})
	a.agentRoutes()
	a.identityRoutes()
	a.trustRoutes()
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s %s", r.Method, r.URL.Path))
	})
}

// handle registers one handler per method, and a JSON 405 for the others
// (the mux's own 405 is plain text).
func (a *API) handle(path string, byMethod map[string]http.HandlerFunc) {
	allow := ""
	for m, h := range byMethod {
		a.mux.HandleFunc(m+" "+path, h)
		if allow != "" {
			allow += ", "
		}
		allow += m
	}
	if _, ok := byMethod["GET"]; ok {
		allow += ", HEAD"
	}
	a.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, allow))
	})
}

// ServeHTTP implements http.Handler.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.serveAuthorized(w, r) }

func (a *API) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

type errorBody struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	// No indentation: it would reformat embedded signed metadata, whose
	// signatures cover its exact bytes.
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// internalError logs the detail and answers 500 without leaking it.
func (a *API) internalError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) {
		return // the client went away
	}
	a.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, "internal error; see the control plane log")
}

// validName matches model names and versions: they appear in URL paths.
var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`)
