package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigFixtures loads every testdata/config/*.yaml over Default():
// *.good.yaml must validate; *.bad.yaml must fail with ErrConfig and a
// message containing the text of the .err file beside it (the field name).
func TestConfigFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/config/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg := Default()
			err := cfg.LoadFile(f)
			if err == nil {
				err = cfg.Validate()
			}
			if strings.HasSuffix(f, ".good.yaml") {
				if err != nil {
					t.Fatalf("good config rejected: %v", err)
				}
				if cfg.Socket == "" || cfg.FileMode() == 0 {
					t.Errorf("derived defaults missing: socket %q mode %v", cfg.Socket, cfg.FileMode())
				}
				return
			}
			want, rerr := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".err")
			if rerr != nil {
				t.Fatal(rerr)
			}
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Fatalf("got %v, want ErrConfig containing %q", err, strings.TrimSpace(string(want)))
			}
		})
	}
}

func TestConfigSocketDefaultsUnderData(t *testing.T) {
	cfg := Default()
	cfg.DeviceID, cfg.TrustRoot, cfg.Data = "d", "k", "/srv/agent"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.Socket != "/srv/agent/agent.sock" || cfg.FileMode() != 0o660 {
		t.Errorf("socket %q mode %o, want /srv/agent/agent.sock 660", cfg.Socket, cfg.FileMode())
	}
}
