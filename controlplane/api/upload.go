package api

import (
	"fmt"
	"io"
	"net/http"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// targetUpload is a push of one target as starlingctl sends it (model push,
// agent push): the operator's next targets metadata, the new target's path
// and the artifact, held in a pending artifact file.
type targetUpload struct {
	targets, path []byte
	// pending holds the artifact; the caller commits it or aborts it.
	pending *store.PendingArtifact
}

// readUpload reads a target push: multipart/form-data with a "targets"
// part (the signed targets metadata), a "target" part (the new target's
// path) and an "artifact" part, in any order; artifact names what the
// artifact is in error answers ("the model file"). The artifact streams to
// a temporary file while it is hashed, so a large upload costs disk, not
// memory. On failure it has answered and aborted the pending artifact; on
// success the caller must Commit or Abort u.pending.
func (a *API) readUpload(w http.ResponseWriter, r *http.Request, artifact string) (u *targetUpload, ok bool) {
	// The cap covers the artifact, the metadata and multipart framing.
	r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxUpload+tuf.MaxTargetsSize+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "want multipart/form-data with parts \"targets\" (signed targets metadata), \"target\" (its path) and \"artifact\" ("+artifact+"): "+err.Error())
		return nil, false
	}
	u = &targetUpload{}
	defer func() {
		if !ok && u.pending != nil {
			u.pending.Abort()
		}
	}()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			a.uploadError(w, r, fmt.Errorf("reading upload: %w", err))
			return u, false
		}
		switch name := part.FormName(); name {
		case "targets", "target":
			limit := int64(tuf.MaxTargetsSize)
			dst := &u.targets
			if name == "target" {
				limit, dst = 1024, &u.path
			}
			if *dst != nil {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("upload has more than one %q part", name))
				return u, false
			}
			b, err := io.ReadAll(io.LimitReader(part, limit+1))
			if err != nil {
				a.uploadError(w, r, fmt.Errorf("reading %s part: %w", name, err))
				return u, false
			}
			if int64(len(b)) > limit {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("%s part exceeds %d bytes", name, limit))
				return u, false
			}
			*dst = b
		case "artifact":
			if u.pending != nil {
				writeError(w, http.StatusBadRequest, "upload has more than one \"artifact\" part")
				return u, false
			}
			if u.pending, err = a.opts.Artifacts.Begin(); err != nil {
				a.internalError(w, r, err)
				return u, false
			}
			if _, err := io.Copy(u.pending, io.LimitReader(part, a.opts.MaxUpload+1)); err != nil {
				a.uploadError(w, r, fmt.Errorf("reading artifact part: %w", err))
				return u, false
			}
			if u.pending.Size() > a.opts.MaxUpload {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("artifact exceeds the upload limit of %d bytes", a.opts.MaxUpload))
				return u, false
			}
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unexpected upload part %q: want \"targets\", \"target\" and \"artifact\"", part.FormName()))
			return u, false
		}
		part.Close()
	}
	for _, p := range []struct {
		missing bool
		name    string
	}{{u.targets == nil, "targets\" part (the signed targets metadata)"}, {u.path == nil, "target\" part (the new target's path)"}, {u.pending == nil, "artifact\" part (" + artifact + ")"}} {
		if p.missing {
			writeError(w, http.StatusBadRequest, "upload has no \""+p.name)
			return u, false
		}
	}
	return u, true
}
