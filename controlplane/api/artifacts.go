package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/starling-edge/starling/controlplane/store"
)

// getArtifact serves an artifact's bytes by digest, with Range, If-Range
// and conditional requests (http.ServeContent). The path accepts
// "sha256:<hex>" or the bare hex. Content never changes under a digest, so
// it is cacheable forever.
func (a *API) getArtifact(w http.ResponseWriter, r *http.Request) {
	digest := r.PathValue("digest")
	if !strings.HasPrefix(digest, "sha256:") {
		digest = "sha256:" + digest
	}
	f, _, err := a.opts.Artifacts.Open(digest)
	switch {
	case errors.Is(err, store.ErrInvalid):
		writeError(w, http.StatusBadRequest, fmt.Sprintf("malformed digest %.80q: want sha256:<64 lowercase hex>", r.PathValue("digest")))
		return
	case errors.Is(err, store.ErrNotFound):
		writeError(w, http.StatusNotFound, fmt.Sprintf("no artifact %s", digest))
		return
	case err != nil:
		a.internalError(w, r, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+digest+`"`)
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
	http.ServeContent(w, r, "", time.Time{}, f)
}
