package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/starling-edge/starling/controlplane/tufrepo"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// trustRoutes serve the TUF repository: metadata files for devices (and
// starlingctl), the online public keys root must name, and uploads of
// operator-signed root and targets metadata.
func (a *API) trustRoutes() {
	a.handle("/api/v1/tuf/{name}", map[string]http.HandlerFunc{"GET": a.getMetadata})
	a.handle("/api/v1/trust/online-keys", map[string]http.HandlerFunc{"GET": a.onlineKeys})
	a.handle("/api/v1/trust/root", map[string]http.HandlerFunc{"POST": a.postRoot})
	a.handle("/api/v1/trust/targets", map[string]http.HandlerFunc{"POST": a.postTargets})
}

// getMetadata serves "timestamp.json", "<N>.root.json", "root.json" (the
// newest), "<N>.snapshot.json" and "<N>.targets.json". Everything but
// timestamp.json and root.json is immutable under its name.
func (a *API) getMetadata(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	b, err := a.opts.Repo.File(name)
	if errors.Is(err, tufrepo.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no metadata file %.80q", name))
		return
	}
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if name == "timestamp.json" || name == "root.json" {
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	}
	w.Write(b)
}

// OnlineKey is a public key as GET /api/v1/trust/online-keys shows it.
type OnlineKey struct {
	KeyType string `json:"keytype"` // "ed25519"
	KeyID   string `json:"keyid"`   // TUF key id
	Public  string `json:"public"`  // hex
}

func (a *API) onlineKeys(w http.ResponseWriter, _ *http.Request) {
	snap, ts := a.opts.Repo.OnlineKeys()
	view := func(k []byte) OnlineKey {
		return OnlineKey{KeyType: "ed25519", KeyID: tuf.KeyID(k), Public: hex.EncodeToString(k)}
	}
	writeJSON(w, http.StatusOK, map[string]OnlineKey{tuf.RoleSnapshot: view(snap), tuf.RoleTimestamp: view(ts)})
}

func (a *API) readMetadataBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		a.uploadError(w, r, err)
		return nil, false
	}
	if int64(len(b)) > limit {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("metadata exceeds %d bytes", limit))
		return nil, false
	}
	return b, true
}

// repoError answers a rejected upload: 409 for a version conflict, 400
// naming the failed check otherwise.
func (a *API) repoError(w http.ResponseWriter, r *http.Request, what string, err error) {
	switch {
	case errors.Is(err, tufrepo.ErrConflict):
		writeError(w, http.StatusConflict, what+" rejected: "+err.Error())
	case errors.Is(err, tufrepo.ErrNoRoot):
		writeError(w, http.StatusConflict, what+" rejected: "+err.Error())
	case errors.Is(err, tufrepo.ErrRejected):
		writeError(w, http.StatusBadRequest, what+" rejected: "+describe(err))
	default:
		a.internalError(w, r, err)
	}
}

// postRoot stores the next root version (starlingctl keys init / rotate).
func (a *API) postRoot(w http.ResponseWriter, r *http.Request) {
	b, ok := a.readMetadataBody(w, r, tuf.MaxRootSize)
	if !ok {
		return
	}
	md, err := a.opts.Repo.SetRoot(b)
	if err != nil {
		a.repoError(w, r, "root", err)
		return
	}
	a.log.Info("root metadata stored", "version", md.Signed.Version)
	writeJSON(w, http.StatusCreated, map[string]int64{"version": md.Signed.Version})
}

// postTargets stores the next targets version without an artifact (the
// first, empty targets, or targets re-signed after a key rotation).
func (a *API) postTargets(w http.ResponseWriter, r *http.Request) {
	b, ok := a.readMetadataBody(w, r, tuf.MaxTargetsSize)
	if !ok {
		return
	}
	cur := a.opts.Repo.Targets()
	md, err := a.opts.Repo.CheckTargets(b)
	if err != nil {
		a.repoError(w, r, "targets", err)
		return
	}
	// Without an upload, no target may appear whose artifact is not held.
	for path, tf := range md.Signed.Targets {
		if cur != nil && cur.Signed.Targets[path] != nil && cur.Signed.Targets[path].Equal(*tf) {
			continue
		}
		writeError(w, http.StatusBadRequest, fmt.Sprintf("targets rejected: target %s is new or changed; push its artifact with it (starlingctl model push)", path))
		return
	}
	if md, err = a.opts.Repo.PutTargets(b); err != nil {
		a.repoError(w, r, "targets", err)
		return
	}
	writeJSON(w, http.StatusCreated, map[string]int64{"version": md.Signed.Version})
}
