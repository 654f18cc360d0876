package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/wire"
)

// deviceView is a device as the API shows it. LastSeen is null until the
// device has been heard from live (retained messages do not count).
type deviceView struct {
	ID       string              `json:"id"`
	Status   string              `json:"status"` // "online" or "offline"
	LastSeen *time.Time          `json:"last_seen"`
	Reported *wire.ReportedState `json:"reported"`
	Desired  *wire.DesiredState  `json:"desired"`
}

func viewDevice(d store.Device) deviceView {
	v := deviceView{ID: d.ID, Status: d.Status, Reported: d.Reported, Desired: d.Desired}
	if v.Status != wire.Online {
		v.Status = wire.Offline
	}
	if !d.LastSeen.IsZero() {
		t := d.LastSeen
		v.LastSeen = &t
	}
	return v
}

func (a *API) listDevices(w http.ResponseWriter, r *http.Request) {
	devices, err := a.opts.Store.ListDevices(r.Context())
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	out := make([]deviceView, 0, len(devices))
	for _, d := range devices {
		out = append(out, viewDevice(d))
	}
	writeJSON(w, http.StatusOK, out)
}

// deviceID reads and checks the {id} path value; on failure it has answered.
func deviceID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id := r.PathValue("id")
	if !wire.ValidDeviceID(id) {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid device id %.80q: want 1-64 of [A-Za-z0-9._-], not starting with a dot", id))
		return "", false
	}
	return id, true
}

// lookupDevice answers 404 for an unknown device.
func (a *API) lookupDevice(w http.ResponseWriter, r *http.Request, id string) (store.Device, bool) {
	d, err := a.opts.Store.GetDevice(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("device %s is not registered (it registers when its agent first connects)", id))
		return d, false
	}
	if err != nil {
		a.internalError(w, r, err)
		return d, false
	}
	return d, true
}

func (a *API) getDevice(w http.ResponseWriter, r *http.Request) {
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	if d, ok := a.lookupDevice(w, r, id); ok {
		writeJSON(w, http.StatusOK, viewDevice(d))
	}
}

// deviceEvents returns the device's newest events, oldest first. ?limit=N
// asks for fewer than the default (EventLimit).
func (a *API) deviceEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	limit := a.opts.EventLimit
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q is not a positive integer", s))
			return
		}
		limit = min(n, limit)
	}
	if _, ok := a.lookupDevice(w, r, id); !ok {
		return
	}
	evs, err := a.opts.Store.ListEvents(r.Context(), id, limit)
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, evs)
}

// desiredRequest is the body of PUT /api/v1/devices/{id}/desired.
type desiredRequest struct {
	Models *[]store.ModelRef `json:"models"`
}

// maxDesiredModels bounds how many models one device is asked to hold.
const maxDesiredModels = 64

func (a *API) putDesired(w http.ResponseWriter, r *http.Request) {
	id, ok := deviceID(w, r)
	if !ok {
		return
	}
	var req desiredRequest
	if err := decodeStrict(w, r, &req); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if req.Models == nil {
		writeError(w, http.StatusBadRequest, `body needs "models": a list of {"name","version"} (an empty list removes every model)`)
		return
	}
	refs := *req.Models
	if len(refs) > maxDesiredModels {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("%d models requested; a device holds at most %d", len(refs), maxDesiredModels))
		return
	}
	seen := make(map[store.ModelRef]bool, len(refs))
	for i, ref := range refs {
		if ref.Name == "" || ref.Version == "" {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("models[%d] needs both name and version", i))
			return
		}
		if seen[ref] {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("models[%d]: %s version %s is listed twice", i, ref.Name, ref.Version))
			return
		}
		seen[ref] = true
	}
	// Check here for clear answers; SetDesired checks again as it stores.
	if _, ok := a.lookupDevice(w, r, id); !ok {
		return
	}
	for _, ref := range refs {
		_, err := a.opts.Store.GetModel(r.Context(), ref.Name, ref.Version)
		if errors.Is(err, store.ErrNotFound) {
			writeError(w, http.StatusNotFound, fmt.Sprintf("model %s version %s is not published", ref.Name, ref.Version))
			return
		}
		if err != nil {
			a.internalError(w, r, err)
			return
		}
	}
	ds, err := a.opts.Desired.SetDesired(r.Context(), id, refs)
	switch {
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case err != nil && a.opts.NotDelivered(err):
		writeError(w, http.StatusServiceUnavailable, fmt.Sprintf("desired state generation %d is stored but the broker has not accepted it yet; it is sent again when the broker is back: %v", ds.Generation, err))
	case err != nil:
		a.internalError(w, r, err)
	default:
		writeJSON(w, http.StatusOK, ds)
	}
}

// decodeStrict decodes one JSON object with no unknown fields and nothing
// after it.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err != nil {
		return fmt.Errorf("reading body: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("malformed JSON body: unexpected data after the object")
	}
	return nil
}
