package api

import (
	"fmt"
	"net/http"
	"time"

	"github.com/theupdateframework/go-tuf/v2/metadata"

	"github.com/starling-edge/starling/shared/trust/tuf"
)

// Agent releases: agent binaries signed in the targets metadata (kind
// "agent", path agent/<version>/<os>-<arch>). The signed targets are the
// registry: GET lists what the current targets version names, so a release
// is exactly what devices can verify.

// agentRoutes registers the agent release endpoints. Roles follow the
// defaults (see routeRoles): viewer to list, operator to push.
func (a *API) agentRoutes() {
	a.handle("/api/v1/agents", map[string]http.HandlerFunc{"GET": a.listAgents, "POST": a.publishAgent})
}

// agentView is an agent release as the API shows it.
type agentView struct {
	Version         string    `json:"version"`
	OS              string    `json:"os"`
	Arch            string    `json:"arch"`
	Digest          string    `json:"digest"`
	Size            int64     `json:"size"`
	MinAgentVersion string    `json:"min_agent_version,omitempty"`
	Target          string    `json:"target"`          // TUF target path
	TargetsVersion  int64     `json:"targets_version"` // targets version that signs it
	Expires         time.Time `json:"expires"`         // of that targets version
}

func viewAgent(t *tuf.Target) agentView {
	c := t.Custom
	return agentView{Version: c.Version, OS: c.OS, Arch: c.Arch, Digest: t.Digest, Size: t.Length, MinAgentVersion: c.MinAgentVersion,
		Target: t.Path, TargetsVersion: t.TargetsVersion, Expires: t.Expires}
}

func (a *API) listAgents(w http.ResponseWriter, _ *http.Request) {
	out := []agentView{}
	if cur := a.opts.Repo.Targets(); cur != nil {
		for _, t := range tuf.Agents(cur) {
			out = append(out, viewAgent(t))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// publishAgent stores an agent binary: the same upload as publishModel
// (next targets version signed offline, the new target's path, the
// binary), for an agent target. The binary must match the target's length
// and sha256, and a release is immutable: the same version and platform
// with other bytes is a conflict. Every other target must be one the
// current targets already sign, unchanged, so the control plane holds
// every artifact it serves.
func (a *API) publishAgent(w http.ResponseWriter, r *http.Request) {
	u, ok := a.readUpload(w, r, "the agent binary")
	if !ok {
		return
	}
	defer u.pending.Abort() // no-op after Commit
	path := string(u.path)

	cur := a.opts.Repo.Targets()
	md, err := a.opts.Repo.CheckTargets(u.targets)
	if err != nil {
		a.repoError(w, r, "targets", err)
		return
	}
	t, err := tuf.TargetAt(md, path)
	if err == nil {
		err = tuf.CheckAgentCustom(path, t.Custom)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, "target rejected: "+describe(err))
		return
	}
	if err := otherTargetsUnchanged(cur, md, path); err != nil {
		writeError(w, http.StatusBadRequest, "targets rejected: "+err.Error())
		return
	}
	if err := verifyUpload(t, u.pending); err != nil {
		writeError(w, http.StatusBadRequest, "artifact rejected: "+describe(err))
		return
	}
	c := t.Custom
	existed := false
	if cur != nil {
		if prev, err := tuf.TargetAt(cur, path); err == nil {
			if prev.Digest != t.Digest {
				writeError(w, http.StatusConflict, fmt.Sprintf("agent %s for %s-%s is already published with digest %s; releases are immutable, publish a new version",
					c.Version, c.OS, c.Arch, prev.Digest))
				return
			}
			existed = true
		}
	}
	if _, err := u.pending.Commit(); err != nil {
		a.internalError(w, r, err)
		return
	}
	if md, err = a.opts.Repo.PutTargets(u.targets); err != nil {
		a.repoError(w, r, "targets", err)
		return
	}
	t.TargetsVersion, t.Expires = md.Signed.Version, md.Signed.Expires
	if existed {
		writeJSON(w, http.StatusOK, viewAgent(t))
		return
	}
	a.log.Info("agent published", "version", c.Version, "os", c.OS, "arch", c.Arch, "digest", t.Digest, "size", t.Length, "targets_version", md.Signed.Version)
	writeJSON(w, http.StatusCreated, viewAgent(t))
}

// otherTargetsUnchanged checks that next adds or changes no target but
// path relative to cur (removing targets is allowed).
func otherTargetsUnchanged(cur, next *metadata.Metadata[metadata.TargetsType], path string) error {
	for p, tf := range next.Signed.Targets {
		if p == path {
			continue
		}
		if cur != nil && cur.Signed.Targets[p] != nil && cur.Signed.Targets[p].Equal(*tf) {
			continue
		}
		return fmt.Errorf("target %s is new or changed besides the pushed %s; push one target at a time with its artifact", p, path)
	}
	return nil
}
