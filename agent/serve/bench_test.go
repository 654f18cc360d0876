package serve

import (
	"bufio"
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
	sock, header, body := benchServer(b, false)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	b.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}
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

// BenchmarkInferBinaryRaw is BenchmarkInferBinary with a client that
// writes the request's bytes and reads the answer's by Content-Length,
// so that the figures (allocations above all) are the server's: on the
// fast path (the default) and with DisableFastPath (net/http).
func BenchmarkInferBinaryRaw(b *testing.B) {
	for _, bc := range []struct {
		name    string
		disable bool
	}{{"fast", false}, {"nethttp", true}} {
		b.Run(bc.name, func(b *testing.B) {
			sock, header, body := benchServer(b, bc.disable)
			c, err := net.Dial("unix", sock)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := fmt.Appendf(nil, "POST /v2/models/bench/infer HTTP/1.1\r\nHost: agent\r\nContent-Length: %d\r\n%s: %d\r\n\r\n", len(body), headerInferLen, len(header))
			req = append(req, body...)
			br := bufio.NewReaderSize(c, 64<<10)
			resp := make([]byte, 0, 64<<10)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				cl := -1
				for {
					line, err := br.ReadSlice('\n')
					if err != nil {
						b.Fatal(err)
					}
					if len(line) == 2 {
						break
					}
					if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
						cl, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
					}
				}
				if cl < 0 {
					b.Fatal("no Content-Length")
				}
				if _, err := io.ReadFull(br, resp[:cl]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchServer serves the 1 KB input dense_batch model as "bench" on a
// unix socket until b ends and returns the socket and a binary-extension
// request's JSON header and body.
func benchServer(b *testing.B, disableFast bool) (sock, header string, body []byte) {
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
	sock = filepath.Join(dir, "agent.sock")
	reg := NewRegistry()
	srv, err := New(Options{Socket: sock, Registry: reg, DisableFastPath: disableFast, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
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
	data := make([]byte, 1024)
	header = fmt.Sprintf(`{"inputs":[{"name":"input","shape":[1,256],"datatype":"FP32","parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`, len(data))
	return sock, header, append([]byte(header), data...)
}
