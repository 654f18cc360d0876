package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-edge/starling/shared/testbroker"
)

func TestConfigFixtures(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := loadConfig([]string{"--config", f}, io.Discard)
			if strings.HasSuffix(f, ".good.yaml") {
				if err != nil || cfg.DataDir != "/var/lib/starling" {
					t.Fatalf("loadConfig = %+v, %v", cfg, err)
				}
				return
			}
			want, rerr := os.ReadFile(f + ".err")
			if rerr != nil {
				t.Fatalf("bad fixture without .err file: %v", rerr)
			}
			if !errors.Is(err, errConfig) || !strings.Contains(err.Error(), strings.TrimSpace(string(want))) {
				t.Fatalf("loadConfig error = %v; want errConfig containing %q", err, want)
			}
		})
	}
}

func TestConfigOrder(t *testing.T) {
	cfg, err := loadConfig([]string{"--data", "/d"}, io.Discard)
	if err != nil || cfg.Listen != "127.0.0.1:8080" || cfg.MQTTListen != "127.0.0.1:1883" || cfg.Broker != "" {
		t.Fatalf("defaults = %+v, %v", cfg, err)
	}
	// Flags given override the file; flags not given leave it alone.
	cfg, err = loadConfig([]string{"--listen", "127.0.0.1:7000", "--config", "testdata/full.good.yaml"}, io.Discard)
	if err != nil || cfg.Listen != "127.0.0.1:7000" || cfg.MQTTListen != "127.0.0.1:1884" || cfg.LogLevel != "warn" {
		t.Fatalf("file then flags = %+v, %v", cfg, err)
	}
	if _, err := loadConfig([]string{"--data", "/d", "extra"}, io.Discard); !errors.Is(err, errConfig) {
		t.Fatalf("stray argument: %v", err)
	}
	if _, err := loadConfig([]string{"--config", "testdata/missing.yaml"}, io.Discard); !errors.Is(err, errConfig) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestRun starts the real command on free ports, reads the endpoint lines,
// calls the API, and stops it by cancelling the context (as SIGTERM does).
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--data", t.TempDir(), "--listen", "127.0.0.1:0", "--mqtt-listen", "127.0.0.1:0", "--device-listen", "127.0.0.1:0", "--log-level", "error"}, pw, io.Discard)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for len(lines) < 2 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "starling-control: api http://127.0.0.1:") || !strings.HasPrefix(lines[1], "starling-control: mqtt mqtts://127.0.0.1:") {
		cancel()
		t.Fatalf("endpoint lines = %q (run: %v)", lines, <-done)
	}
	go io.Copy(io.Discard, pr)
	resp, err := http.Get(strings.TrimPrefix(lines[0], "starling-control: api ") + "/api/v1/health")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("health: %v %v", resp, err)
	}
	resp.Body.Close()
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run after cancel: %v", err)
	}
}

// TestMosquittoConfigCommand writes a configuration and starts a real
// Mosquitto with it (the ACL behaviour itself is tested in
// controlplane/broker).
func TestMosquittoConfigCommand(t *testing.T) {
	data, out := t.TempDir(), t.TempDir()
	addr := fmt.Sprintf("127.0.0.1:%d", testbroker.FreePort(t))
	var stdout strings.Builder
	if err := run(context.Background(), []string{"mosquitto-config", "--data", data, "--out", out, "--listen", addr}, &stdout, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "mosquitto -c ") {
		t.Fatalf("output: %s", stdout.String())
	}
	testbroker.MosquittoFile(t, filepath.Join(out, "mosquitto.conf"), addr)
	if err := run(context.Background(), []string{"mosquitto-config", "--out", out}, io.Discard, io.Discard); !errors.Is(err, errConfig) {
		t.Fatalf("without --data: %v", err)
	}
}
