package serve

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
)

// BenchmarkInferBinary is one REST binary-extension inference of the 1 KB
// input test model over the unix socket, client included: the per-request
// cost servebench's "agent REST binary" row measures, for profiling
// (go test -bench InferBinary -cpuprofile cpu.out ./agent/serve).
func BenchmarkInferBinary(b *testing.B) {
	art, err := os.ReadFile("../../testdata/models/dense_batch/model.tflite")
	if err != nil {
		b.Fatal(err)
	}
	eng, err := runtime.Lookup("gotflite")
	if err != nil {
		b.Fatal(err)
	}
	m, err := eng.Load(art, runtime.LoadOptions{})
	if err != nil {
		b.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "servebench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	reg := NewRegistry()
	srv, err := New(Options{Socket: sock, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	if err := reg.Load(context.Background(), "bench", "1", "tflite", m, true); err != nil {
		b.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(ctx) }()
	b.Cleanup(func() { cancel(); wg.Wait() })

	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	b.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
	data := make([]byte, 1024)
	header := fmt.Sprintf(`{"inputs":[{"name":"input","shape":[1,256],"datatype":"FP32","parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`, len(data))
	body := append([]byte(header), data...)
	hl := strconv.Itoa(len(header))
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest("POST", "http://agent/v2/models/bench/infer", bytes.NewReader(body))
		req.Header.Set(headerInferLen, hl)
		resp, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatal(resp.Status)
		}
	}
}
