// Package testbroker starts real MQTT brokers for tests: a Mosquitto process
// from the system's package (Debian's mosquitto). It is imported only by
// tests.
package testbroker

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// MosquittoPath finds the mosquitto binary: $MOSQUITTO, then PATH, then
// /usr/sbin (where Debian installs it, often outside a user's PATH).
func MosquittoPath() (string, error) {
	if p := os.Getenv("MOSQUITTO"); p != "" {
		return p, nil
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	if _, err := os.Stat("/usr/sbin/mosquitto"); err == nil {
		return "/usr/sbin/mosquitto", nil
	}
	return "", fmt.Errorf("mosquitto not found: install it (apt-get install mosquitto, or `make test-deps`) or set $MOSQUITTO")
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Mosquitto starts a Mosquitto broker on a free loopback port with the
// given extra configuration lines (anonymous access by default) and returns
// its "mqtt://127.0.0.1:PORT" URL. The broker is stopped at test cleanup.
// A missing binary fails the test: suites never skip for a missing broker.
func Mosquitto(t testing.TB, extraConf ...string) string {
	t.Helper()
	bin, err := MosquittoPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port := FreePort(t)
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", port),
		"persistence false",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
	}
	if len(extraConf) == 0 {
		conf = append(conf, "allow_anonymous true")
	}
	conf = append(conf, extraConf...)
	confPath := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	start(t, bin, confPath, addr, dir)
	return "mqtt://" + addr
}

// MosquittoFile starts Mosquitto with a complete configuration file (such
// as the one `starling-control mosquitto-config` writes) and waits until
// addr ("127.0.0.1:PORT", the file's listener) accepts connections. When
// the test runs as root it adds "user root" so that the broker keeps
// access to key files only root may read. The broker is stopped at test
// cleanup.
func MosquittoFile(t testing.TB, confPath, addr string) {
	t.Helper()
	bin, err := MosquittoPath()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	b, err := os.ReadFile(confPath)
	if err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		b = append([]byte("user root\n"), b...)
		confPath = filepath.Join(dir, "mosquitto.conf")
		if err := os.WriteFile(confPath, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	start(t, bin, confPath, addr, dir)
}

// start runs mosquitto -c confPath, logging into dir, until test cleanup,
// and waits for addr to accept connections.
func start(t testing.TB, bin, confPath, addr, dir string) {
	t.Helper()
	log, err := os.Create(filepath.Join(dir, "mosquitto.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", confPath)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatalf("start mosquitto: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		log.Close()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			c.Close()
			return
		}
		select {
		case err := <-exited:
			out, _ := os.ReadFile(log.Name())
			t.Fatalf("mosquitto exited: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto did not listen on %s within 10s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
