package api_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/starling-edge/starling/controlplane/fleet"
	"github.com/starling-edge/starling/controlplane/internal/cptest"
	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/trust/tuf"
)

// agentRelease is an agent binary ready to push.
type agentRelease struct {
	path string
	c    tuf.Custom
	bin  []byte
}

func newAgent(version, goos, arch string, size int) agentRelease {
	bin := make([]byte, size)
	rand.Read(bin)
	return agentRelease{path: tuf.AgentPath(version, goos, arch), c: tuf.AgentCustom(version, goos, arch, ""), bin: bin}
}

// agentRepo signs targets versions naming agent binaries with the
// operator's targets key (cptest.RepoFor set up root and targets version 1).
type agentRepo struct {
	keys    *cptest.Repo
	version int64 // last targets version the control plane stored
	held    map[string]agentRelease
}

func newAgentRepo(t *testing.T, base string) *agentRepo {
	return &agentRepo{keys: cptest.RepoFor(t, base), version: 1, held: map[string]agentRelease{}}
}

// next signs the next targets version: every held release, then extra
// (which win), signed with the targets key unless keys are given.
func (r *agentRepo) next(t *testing.T, keys []*trust.PrivateKey, extra ...agentRelease) []byte {
	t.Helper()
	md := tuf.NewTargets(r.version+1, time.Now().Add(24*time.Hour))
	for _, set := range []map[string]agentRelease{r.held, byPath(extra)} {
		for p, a := range set {
			if err := tuf.SetTarget(md, p, int64(len(a.bin)), trust.Digest(a.bin), a.c); err != nil {
				t.Fatal(err)
			}
		}
	}
	if keys == nil {
		keys = []*trust.PrivateKey{r.keys.Targets}
	}
	b, err := tuf.Sign(md, keys...)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func byPath(as []agentRelease) map[string]agentRelease {
	m := map[string]agentRelease{}
	for _, a := range as {
		m[a.path] = a
	}
	return m
}

func (r *agentRepo) push(t *testing.T, base string, a agentRelease) (int, []byte) {
	t.Helper()
	body, ct := cptest.Multipart(t, cptest.Part{Name: "targets", Data: r.next(t, nil, a)}, cptest.Part{Name: "target", Data: []byte(a.path)},
		cptest.Part{Name: "artifact", Data: a.bin})
	code, resp := cptest.Do(t, "POST", base+"/api/v1/agents", ct, body)
	if code/100 == 2 {
		r.version++
		r.held[a.path] = a
	}
	return code, resp
}

type agentView struct {
	Version         string    `json:"version"`
	OS              string    `json:"os"`
	Arch            string    `json:"arch"`
	Digest          string    `json:"digest"`
	Size            int64     `json:"size"`
	MinAgentVersion string    `json:"min_agent_version"`
	Target          string    `json:"target"`
	TargetsVersion  int64     `json:"targets_version"`
	Expires         time.Time `json:"expires"`
}

// httpFetcher reads repository metadata as a device does.
type httpFetcher struct{ base string }

func (f httpFetcher) FetchMetadata(ctx context.Context, name string, maxLen int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", f.base+"/api/v1/tuf/"+url.PathEscape(name), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == 404 {
		return nil, fmt.Errorf("%s: %w", name, tuf.ErrNotFound)
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %s", name, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxLen))
}

// TestPublishAgent: an agent binary is pushed, listed, served by digest,
// and a device's TUF client finds and verifies it; re-pushing it is
// idempotent and other bytes under the same release conflict.
func TestPublishAgent(t *testing.T) {
	e := newEnv(t, 0)
	repo := newAgentRepo(t, e.base)
	if code, body := cptest.Do(t, "GET", e.base+"/api/v1/agents", "", nil); code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("empty list = %d %s", code, body)
	}
	arm64 := newAgent("1.4.0", "linux", "arm64", 3000)
	arm64.c.MinAgentVersion = "1.2"
	armv7 := newAgent("1.4.0", "linux", "armv7", 2000)
	for i, a := range []agentRelease{arm64, armv7} {
		code, body := repo.push(t, e.base, a)
		var got agentView
		if code != http.StatusCreated || json.Unmarshal(body, &got) != nil {
			t.Fatalf("push %s = %d %s", a.path, code, body)
		}
		if got.Version != "1.4.0" || got.OS != "linux" || got.Arch != a.c.Arch || got.Digest != trust.Digest(a.bin) || got.Size != int64(len(a.bin)) ||
			got.Target != a.path || got.TargetsVersion != int64(i+2) || got.MinAgentVersion != a.c.MinAgentVersion {
			t.Fatalf("push answer = %+v", got)
		}
	}
	// Identical again is idempotent (200) in a new targets version.
	if code, body := repo.push(t, e.base, arm64); code != http.StatusOK {
		t.Fatalf("identical push = %d %s", code, body)
	}
	// Other bytes for a published release conflict, and change nothing.
	other := newAgent("1.4.0", "linux", "arm64", 3000)
	if code, body := repo.push(t, e.base, other); code != http.StatusConflict || !strings.Contains(errorOf(t, body), "immutable") {
		t.Fatalf("other bytes = %d %s", code, body)
	}
	code, body := cptest.Do(t, "GET", e.base+"/api/v1/agents", "", nil)
	var list []agentView
	if code != 200 || json.Unmarshal(body, &list) != nil || len(list) != 2 || list[0].Arch != "arm64" || list[1].Arch != "armv7" ||
		list[0].Digest != trust.Digest(arm64.bin) || list[0].TargetsVersion != 4 {
		t.Fatalf("list = %d %s", code, body)
	}
	// Agent releases are not models.
	if models, _ := e.store.ListModels(context.Background()); len(models) != 0 {
		t.Fatalf("agent push registered models: %+v", models)
	}

	// A device: refresh from the control plane, find its binary, download
	// it by digest and verify it.
	c, err := tuf.NewClient(tuf.ClientOptions{Root: repo.keys.RootJSON, Store: &tuf.MemoryStore{}, Fetcher: httpFetcher{e.base}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	tg, err := c.Agent("1.4.0", "linux", "arm64", "1.3.0")
	if err != nil {
		t.Fatal(err)
	}
	code, bin := cptest.Do(t, "GET", e.base+"/api/v1/artifacts/"+tg.Digest, "", nil)
	if code != 200 {
		t.Fatalf("download = %d %s", code, bin)
	}
	if err := tg.VerifyArtifact(bin); err != nil {
		t.Fatalf("downloaded binary: %v", err)
	}
	if _, err := c.Agent("1.4.0", "linux", "arm64", "1.1.0"); trust.Check(err) != "agent-version" {
		t.Fatalf("agent 1.1.0 installing a release that needs 1.2: %v", err)
	}
	if _, err := c.Agent("1.4.0", "linux", "amd64", "1.3.0"); trust.Check(err) != "unknown-target" {
		t.Fatalf("platform never pushed: %v", err)
	}
}

func TestPublishAgentRejects(t *testing.T) {
	e := newEnv(t, 64<<10)
	repo := newAgentRepo(t, e.base)
	good := newAgent("2.0.0", "linux", "arm64", 1000)
	tampered := append([]byte(nil), good.bin...)
	tampered[10] ^= 0xff
	model := good
	model.c = tuf.Custom{Kind: tuf.KindModel, Name: tuf.AgentName, Version: "2.0.0", Format: "tflite"}
	misplaced := good
	misplaced.c.Arch = "amd64" // signed for amd64 at the arm64 path
	sneaked := newAgent("2.0.0", "linux", "amd64", 10)
	big := newAgent("2.0.0", "linux", "riscv64", 100<<10)
	other, err := trust.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	targets := repo.next(t, nil, good)
	path := []byte(good.path)

	P := func(name string, data []byte) cptest.Part { return cptest.Part{Name: name, Data: data} }
	tests := []struct {
		name  string
		parts []cptest.Part
		code  int
		want  string
	}{
		{"tampered binary", []cptest.Part{P("targets", targets), P("target", path), P("artifact", tampered)}, 400, "digest check failed"},
		{"truncated binary", []cptest.Part{P("targets", targets), P("target", path), P("artifact", good.bin[:999])}, 400, "size check failed"},
		{"model target", []cptest.Part{P("targets", repo.next(t, nil, model)), P("target", path), P("artifact", good.bin)}, 400, "malformed check failed"},
		{"custom fields for another platform", []cptest.Part{P("targets", repo.next(t, nil, misplaced)), P("target", path), P("artifact", good.bin)}, 400, "malformed check failed"},
		{"target not in targets", []cptest.Part{P("targets", targets), P("target", []byte("agent/9.9.9/linux-arm64")), P("artifact", good.bin)}, 400, "unknown-target check failed"},
		{"another new target besides", []cptest.Part{P("targets", repo.next(t, nil, good, sneaked)), P("target", path), P("artifact", good.bin)}, 400, "new or changed"},
		{"unsigned targets", []cptest.Part{P("targets", repo.next(t, []*trust.PrivateKey{}, good)), P("target", path), P("artifact", good.bin)}, 400, "threshold check failed"},
		{"signed by an unknown key", []cptest.Part{P("targets", repo.next(t, []*trust.PrivateKey{other}, good)), P("target", path), P("artifact", good.bin)}, 400, "unknown-key check failed"},
		{"missing artifact", []cptest.Part{P("targets", targets), P("target", path)}, 400, `no "artifact" part (the agent binary)`},
		{"over the upload limit", []cptest.Part{P("targets", repo.next(t, nil, big)), P("target", []byte(big.path)), P("artifact", big.bin)}, 413, "limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, ct := cptest.Multipart(t, tt.parts...)
			code, resp := cptest.Do(t, "POST", e.base+"/api/v1/agents", ct, body)
			if code != tt.code || !strings.Contains(errorOf(t, resp), tt.want) {
				t.Fatalf("= %d %s; want %d containing %q", code, resp, tt.code, tt.want)
			}
		})
	}
	// None of them changed the repository or stored an artifact.
	if code, body := cptest.Do(t, "GET", e.base+"/api/v1/agents", "", nil); code != 200 || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("list after refusals = %d %s", code, body)
	}
	if code, _ := cptest.Do(t, "GET", e.base+"/api/v1/tuf/2.targets.json", "", nil); code != 404 {
		t.Fatalf("a refused push stored targets version 2")
	}
	for _, a := range []agentRelease{good, big} {
		if code, _ := cptest.Do(t, "GET", e.base+"/api/v1/artifacts/"+trust.Digest(a.bin), "", nil); code != 404 {
			t.Fatalf("a refused push stored artifact %s", a.path)
		}
	}
	// The good one still goes through.
	if code, body := repo.push(t, e.base, good); code != 201 {
		t.Fatalf("good push after refusals = %d %s", code, body)
	}
}

// TestAgentRoles: viewer lists, operator pushes; every push is audited.
func TestAgentRoles(t *testing.T) {
	e := newAuthEnv(t)
	for _, tt := range []struct {
		role, method string
		code         int
	}{
		{"", "GET", 401}, {"viewer", "GET", 200}, {"operator", "GET", 200},
		{"", "POST", 401}, {"viewer", "POST", 403}, {"operator", "POST", 400}, {"admin", "POST", 400},
	} {
		var body io.Reader
		ct := ""
		if tt.method == "POST" {
			body, ct = cptest.Multipart(t) // authorized, then refused as an empty upload
		}
		if code, resp := e.call(t, tt.role, tt.method, "/api/v1/agents", ct, body); code != tt.code {
			t.Errorf("%s %q = %d %s, want %d", tt.method, tt.role, code, resp, tt.code)
		}
	}
	code, body := e.call(t, "admin", "GET", "/api/v1/audit?limit=1000", "", nil)
	var log []fleet.AuditEntry
	if code != 200 || json.Unmarshal(body, &log) != nil {
		t.Fatalf("audit = %d %s", code, body)
	}
	seen := map[string]bool{}
	for _, en := range log {
		seen[fmt.Sprint(en.Action, " ", en.Actor, " ", en.Status)] = true
		if en.Action == "GET /api/v1/agents" {
			t.Errorf("a read was audited: %+v", en)
		}
	}
	for _, want := range []string{"POST /api/v1/agents anonymous 401", "POST /api/v1/agents t-viewer 403", "POST /api/v1/agents t-operator 400"} {
		if !seen[want] {
			t.Errorf("audit log lacks %q", want)
		}
	}
}
