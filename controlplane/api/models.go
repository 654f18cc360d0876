package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"time"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/trust"
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

// publishModel stores a signed model: multipart/form-data with a "metadata"
// part (the signed envelope) and an "artifact" part (the bytes), in either
// order. The artifact streams to a temporary file while it is hashed, so a
// large upload costs disk, not memory. The control plane holds no keys: it
// checks the signed fields, expiry, size and digest, not the signatures;
// devices verify signatures before they run anything.
func (a *API) publishModel(w http.ResponseWriter, r *http.Request) {
	// The cap covers the artifact, the metadata and multipart framing.
	r.Body = http.MaxBytesReader(w, r.Body, a.opts.MaxUpload+maxMetadata+64<<10)
	mr, err := r.MultipartReader()
	if err != nil {
		writeError(w, http.StatusBadRequest, "want multipart/form-data with parts \"metadata\" (signed envelope JSON) and \"artifact\" (the model file): "+err.Error())
		return
	}
	var (
		envelope []byte
		pending  *store.PendingArtifact
	)
	defer func() {
		if pending != nil {
			pending.Abort() // no-op after Commit
		}
	}()
	for {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			a.uploadError(w, r, fmt.Errorf("reading upload: %w", err))
			return
		}
		switch part.FormName() {
		case "metadata":
			if envelope != nil {
				writeError(w, http.StatusBadRequest, "upload has more than one \"metadata\" part")
				return
			}
			envelope, err = io.ReadAll(io.LimitReader(part, maxMetadata+1))
			if err != nil {
				a.uploadError(w, r, fmt.Errorf("reading metadata part: %w", err))
				return
			}
			if len(envelope) > maxMetadata {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("metadata part exceeds %d bytes", maxMetadata))
				return
			}
		case "artifact":
			if pending != nil {
				writeError(w, http.StatusBadRequest, "upload has more than one \"artifact\" part")
				return
			}
			if pending, err = a.opts.Artifacts.Begin(); err != nil {
				a.internalError(w, r, err)
				return
			}
			if _, err := io.Copy(pending, io.LimitReader(part, a.opts.MaxUpload+1)); err != nil {
				a.uploadError(w, r, fmt.Errorf("reading artifact part: %w", err))
				return
			}
			if pending.Size() > a.opts.MaxUpload {
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("artifact exceeds the upload limit of %d bytes", a.opts.MaxUpload))
				return
			}
		default:
			writeError(w, http.StatusBadRequest, fmt.Sprintf("unexpected upload part %q: want \"metadata\" and \"artifact\"", part.FormName()))
			return
		}
		part.Close()
	}
	switch {
	case envelope == nil:
		writeError(w, http.StatusBadRequest, "upload has no \"metadata\" part (the signed envelope JSON)")
		return
	case pending == nil:
		writeError(w, http.StatusBadRequest, "upload has no \"artifact\" part (the model file)")
		return
	}

	md, err := a.checkMetadata(envelope)
	if err != nil {
		writeError(w, http.StatusBadRequest, "metadata rejected: "+describe(err))
		return
	}
	if err := verifyUpload(md, pending); err != nil {
		writeError(w, http.StatusBadRequest, "artifact rejected: "+describe(err))
		return
	}

	// Same version already published: idempotent if identical, else conflict.
	// PutModel repeats this check atomically; this one avoids storing bytes
	// that would be refused.
	if prev, err := a.opts.Store.GetModel(r.Context(), md.Name, md.Version); err == nil {
		if prev.Digest != md.Digest {
			writeError(w, http.StatusConflict, fmt.Sprintf("model %s version %s is already published with digest %s; versions are immutable, publish a new version", md.Name, md.Version, prev.Digest))
			return
		}
		writeJSON(w, http.StatusOK, viewModel(prev, false))
		return
	} else if !errors.Is(err, store.ErrNotFound) {
		a.internalError(w, r, err)
		return
	}

	if _, err := pending.Commit(); err != nil {
		a.internalError(w, r, err)
		return
	}
	m := store.Model{
		Name: md.Name, Version: md.Version, Digest: md.Digest, Size: md.Size, Format: md.Format,
		Created: md.Created, Expires: md.Expires, Metadata: compact(envelope), Published: a.opts.Now().UTC(),
	}
	created, err := a.opts.Store.PutModel(r.Context(), m)
	switch {
	case errors.Is(err, store.ErrConflict):
		writeError(w, http.StatusConflict, fmt.Sprintf("model %s version %s was just published with another digest; versions are immutable, publish a new version", md.Name, md.Version))
	case err != nil:
		a.internalError(w, r, err)
	case created:
		a.log.Info("model published", "name", m.Name, "version", m.Version, "digest", m.Digest, "size", m.Size)
		writeJSON(w, http.StatusCreated, viewModel(m, false))
	default:
		writeJSON(w, http.StatusOK, viewModel(m, false))
	}
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

// checkMetadata parses the envelope and its signed part (fields and
// expiry). Errors wrap a trust sentinel.
func (a *API) checkMetadata(envelope []byte) (*trust.ModelMetadata, error) {
	var env trust.Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("envelope is not valid JSON: %v: %w", err, trust.ErrMalformed)
	}
	if len(env.Signed) == 0 {
		return nil, fmt.Errorf("envelope has no \"signed\" part: %w", trust.ErrMalformed)
	}
	if len(env.Signatures) == 0 {
		return nil, fmt.Errorf("envelope has no signatures; sign it with the release key first: %w", trust.ErrThreshold)
	}
	// Signatures cover the signed bytes exactly; they travel inside JSON
	// messages, which re-encode raw JSON in compact, HTML-escaped form.
	// Signed bytes in any other form would fail verification on every device.
	if again, err := json.Marshal(env.Signed); err != nil || !bytes.Equal(again, env.Signed) {
		return nil, fmt.Errorf("envelope's signed part is not compact JSON as encoding/json writes it, so its signatures would not survive transport; sign the compact encoding: %w", trust.ErrMalformed)
	}
	md, err := trust.ParseModel(env.Signed, a.opts.Now())
	if err != nil {
		return nil, err
	}
	if !validName.MatchString(md.Name) || !validName.MatchString(md.Version) {
		return nil, fmt.Errorf("model %q version %q: names and versions are 1-128 of [A-Za-z0-9._+-], starting with a letter or digit: %w", md.Name, md.Version, trust.ErrMalformed)
	}
	if md.Format == "" {
		return nil, fmt.Errorf("model %s:%s has no format (e.g. \"tflite\"): %w", md.Name, md.Version, trust.ErrMalformed)
	}
	return md, nil
}

// verifyUpload is trust.VerifyArtifact for a streamed artifact: the same
// checks, the same sentinels, without holding the bytes in memory.
func verifyUpload(md *trust.ModelMetadata, p *store.PendingArtifact) error {
	if p.Size() != md.Size {
		return fmt.Errorf("trust: model %s:%s artifact is %d bytes, metadata says %d: %w", md.Name, md.Version, p.Size(), md.Size, trust.ErrSize)
	}
	if got := p.Digest(); got != md.Digest {
		return fmt.Errorf("trust: model %s:%s artifact digest %s, metadata says %s: %w", md.Name, md.Version, got, md.Digest, trust.ErrDigest)
	}
	return nil
}

// describe prefixes a trust error with the check it failed.
func describe(err error) string {
	if c := trust.Check(err); c != "" {
		return fmt.Sprintf("%s check failed: %v", c, err)
	}
	return err.Error()
}

// compact removes insignificant whitespace around the envelope. The signed
// bytes are left as they are: checkMetadata has ensured they are already in
// the form encoding/json produces, so they survive being embedded in a
// desired state (json.Marshal compacts and HTML-escapes raw messages).
func compact(b []byte) []byte {
	var out bytes.Buffer
	if err := json.Compact(&out, b); err != nil {
		return b
	}
	return out.Bytes()
}
