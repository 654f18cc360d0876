package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// modelView is a model version as the API shows it.
type modelView struct {
	Name     string          `json:"name"`
	Version  string          `json:"version"`
	Digest   string          `json:"digest"`
	Size     int64           `json:"size"`
	Format   string          `json:"format"`
	Created  time.Time       `json:"created"`
	Expires  time.Time       `json:"expires"`
	Metadata json.RawMessage `json:"metadata,omitempty"` // detail view only
}

func viewModel(m store.Model, withMetadata bool) modelView {
	v := modelView{Name: m.Name, Version: m.Version, Digest: m.Digest, Size: m.Size, Format: m.Format, Created: m.Created, Expires: m.Expires}
	if withMetadata {
		v.Metadata = m.Metadata
	}
	return v
}

func (a *API) listModels(w http.ResponseWriter, r *http.Request) {
	models, err := a.opts.Store.ListModels(r.Context())
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	out := make([]modelView, 0, len(models))
	for _, m := range models {
		out = append(out, viewModel(m, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getModel(w http.ResponseWriter, r *http.Request) {
	name, version := r.PathValue("name"), r.PathValue("version")
	m, err := a.opts.Store.GetModel(r.Context(), name, version)
	if errors.Is(err, store.ErrNotFound) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("model %s version %s is not published", name, version))
		return
	}
	if err != nil {
		a.internalError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, viewModel(m, true))
}

// publishModel stores a model version: multipart/form-data with a
// "targets" part (the operator's next targets metadata, signed offline), a
// "target" part (the path of the new target in it, e.g. models/demo/3) and
// an "artifact" part (the bytes), in any order. The artifact streams to a
// temporary file while it is hashed, so a large upload costs disk, not
// memory. The targets metadata must verify under the repository's root and
// be the next version; the artifact must match the target's length and
// sha256. Only then are the artifact, the targets and the registry entry
// stored, and the control plane signs a new snapshot and timestamp.
func (a *API) publishModel(w http.ResponseWriter, r *http.Request) {
	u, ok := a.readUpload(w, r, "the model file")
	if !ok {
		return
	}
	defer u.pending.Abort() // no-op after Commit
	targets, path, pending := u.targets, u.path, u.pending

	md, err := a.opts.Repo.CheckTargets(targets)
	if err != nil {
		a.repoError(w, r, "targets", err)
		return
	}
	t, err := a.checkModelTarget(md, string(path))
	if err != nil {
		writeError(w, http.StatusBadRequest, "target rejected: "+describe(err))
		return
	}
	if err := verifyUpload(t, pending); err != nil {
		writeError(w, http.StatusBadRequest, "artifact rejected: "+describe(err))
		return
	}
	c := t.Custom
	// Versions are immutable: the same version with other bytes conflicts.
	if prev, err := a.opts.Store.GetModel(r.Context(), c.Name, c.Version); err == nil && prev.Digest != t.Digest {
		writeError(w, http.StatusConflict, fmt.Sprintf("model %s version %s is already published with digest %s; versions are immutable, publish a new version", c.Name, c.Version, prev.Digest))
		return
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		a.internalError(w, r, err)
		return
	}
	if _, err := pending.Commit(); err != nil {
		a.internalError(w, r, err)
		return
	}
	if _, err := a.opts.Repo.PutTargets(targets); err != nil {
		a.repoError(w, r, "targets", err)
		return
	}
	m := store.Model{
		Name: c.Name, Version: c.Version, Digest: t.Digest, Size: t.Length, Format: c.Format,
		Created: a.opts.Now().UTC().Truncate(time.Second), Expires: t.Expires, Metadata: t.Raw, Published: a.opts.Now().UTC(),
	}
	created, err := a.opts.Store.PutModel(r.Context(), m)
	switch {
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, fmt.Sprintf("model %s version %s was just published with another digest; versions are immutable, publish a new version", c.Name, c.Version))
	case err != nil:
		a.internalError(w, r, err)
	case created:
		a.log.Info("model published", "name", m.Name, "version", m.Version, "digest", m.Digest, "size", m.Size, "targets_version", md.Signed.Version)
		writeJSON(w, http.StatusCreated, viewModel(m, false))
	default:
		prev, _ := a.opts.Store.GetModel(r.Context(), c.Name, c.Version)
		writeJSON(w, http.StatusOK, viewModel(prev, false))
	}
}

// checkModelTarget finds the pushed target and checks that it is a model
// target with usable names. Errors wrap a trust sentinel.
func (a *API) checkModelTarget(md *metadata.Metadata[metadata.TargetsType], path string) (*tuf.Target, error) {
	t, err := tuf.TargetAt(md, path)
	if err != nil {
		return nil, err
	}
	c := t.Custom
	switch {
	case c.Kind != tuf.KindModel:
		return nil, fmt.Errorf("target %s has kind %q, want %q: %w", path, c.Kind, tuf.KindModel, trust.ErrMalformed)
	case !validName.MatchString(c.Name) || !validName.MatchString(c.Version) || (c.Variant != "" && !validName.MatchString(c.Variant)):
		return nil, fmt.Errorf("model %q version %q variant %q: names, versions and variants are 1-128 of [A-Za-z0-9._+-], starting with a letter or digit: %w", c.Name, c.Version, c.Variant, trust.ErrMalformed)
	case tuf.ModelPath(c.Name, c.Version, c.Variant) != path:
		return nil, fmt.Errorf("target %s describes model %s:%s variant %q, whose path is %s: %w", path, c.Name, c.Version, c.Variant, tuf.ModelPath(c.Name, c.Version, c.Variant), trust.ErrMalformed)
	case c.Format == "":
		return nil, fmt.Errorf("model %s:%s has no format (e.g. \"tflite\"): %w", c.Name, c.Version, trust.ErrMalformed)
	}
	return t, nil
}

// verifyUpload is trust.VerifyArtifact for a streamed artifact: the same
// checks, the same sentinels, without holding the bytes in memory.
func verifyUpload(t *tuf.Target, p *store.PendingArtifact) error {
	if p.Size() != t.Length {
		return fmt.Errorf("trust: target %s artifact is %d bytes, targets metadata says %d: %w", t.Path, p.Size(), t.Length, trust.ErrSize)
	}
	if got := p.Digest(); got != t.Digest {
		return fmt.Errorf("trust: target %s artifact digest %s, targets metadata says %s: %w", t.Path, got, t.Digest, trust.ErrDigest)
	}
	return nil
}

// uploadError answers a failed read of the request body: 413 when the body
// hit its cap, 400 otherwise.
func (a *API) uploadError(w http.ResponseWriter, r *http.Request, err error) {
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("upload exceeds the limit of %d bytes for the artifact", a.opts.MaxUpload))
		return
	}
	if errors.Is(err, multipart.ErrMessageTooLarge) {
		writeError(w, http.StatusRequestEntityTooLarge, err.Error())
		return
	}
	if r.Context().Err() != nil {
		return
	}
	writeError(w, http.StatusBadRequest, err.Error())
}

// describe prefixes a trust error with the check it failed.
func describe(err error) string {
	if c := trust.Check(err); c != "" {
		return fmt.Sprintf("%s check failed: %v", c, err)
	}
	return err.Error()
}
