package serve

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// exchange sends raw on a fresh connection to sock (closing the write
// side when half is set) and reads n responses, then reports whether the
// server closed the connection after them (waiting for it when closes is
// set).
func exchange(t *testing.T, sock, raw string, n int, half, closes bool) (out []string, closed bool) {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	if half {
		c.(*net.UnixConn).CloseWrite()
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for range n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading response %d of %d to %q: %v (got %q)", len(out)+1, n, raw, err, out)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, normalize(resp, body))
	}
	if !half && !closes {
		// An open connection shows no EOF; give a wrong close a moment.
		c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	}
	_, err = br.ReadByte()
	return out, errors.Is(err, io.EOF)
}

var timing = regexp.MustCompile(`"(queue|compute)_time_us":\d+`)

// normalize prints a response without what differs from run to run (the
// Date, and the timings in headers and body).
func normalize(resp *http.Response, body []byte) string {
	var b strings.Builder
	// Lengths vary with the digits of the timings; check them instead.
	ihclOK := true
	if h := resp.Header.Get(headerInferLen); h != "" {
		n, err := strconv.Atoi(h)
		ihclOK = err == nil && n <= len(body) && json.Valid(body[:n])
	}
	fmt.Fprintf(&b, "%s %s chunked=%v length-ok=%v header-length-ok=%v\n", resp.Proto, resp.Status,
		slices.Contains(resp.TransferEncoding, "chunked"), resp.ContentLength == int64(len(body)), ihclOK)
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		for k := range resp.Header {
			if !yield(k) {
				return
			}
		}
	}) {
		switch k {
		case "Date", HeaderQueueUs, HeaderComputeUs, "Content-Length", headerInferLen:
			continue
		}
		fmt.Fprintf(&b, "%s: %q\n", k, resp.Header[k])
	}
	b.Write(timing.ReplaceAll(body, []byte(`"${1}_time_us":0`)))
	return b.String()
}

func rawPost(path, body string, hdr ...string) string {
	h := strings.Join(hdr, "")
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: agent\r\nContent-Length: %d\r\n%s\r\n%s", path, len(body), h, body)
}

func rawGet(path string, hdr ...string) string {
	return fmt.Sprintf("GET %s HTTP/1.1\r\nHost: agent\r\n%s\r\n", path, strings.Join(hdr, ""))
}

// TestFastPathSameAnswers sends the same raw requests to a server with
// the fast path (the default) and one without, and compares the answers
// byte for byte (but for Date and timings): the fast path's own answers,
// its hand-overs to net/http (other endpoints, unusual requests, mid-
// connection), pipelined requests, Connection: close, Expect and a
// truncated body.
func TestFastPathSameAnswers(t *testing.T) {
	uid := uint32(os.Getuid())
	reg := NewRegistry()
	loadDemo(t, reg, "1")
	models := map[string]ModelOptions{"theirs": {Allow: Allow{UIDs: []uint32{uid + 1}}}, "rows": {}}
	fast := startServerWith(t, reg, &Options{Models: models, MaxBodyBytes: 64 << 10})
	slow := startServerWith(t, reg, &Options{Models: models, MaxBodyBytes: 64 << 10, DisableFastPath: true})
	mustLoad(t, reg, "theirs", "1", &rowModel{b: 1, scale: 1}, true)
	mustLoad(t, reg, "rows", "1", &rowModel{b: 1, scale: 1}, true)

	in, _ := demoCase(t)
	data := make([]byte, 4*len(in))
	for i, v := range in {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	jsonIn := strings.Trim(strings.Join(strings.Fields(fmt.Sprint(in)), ","), "[]")
	jsonBody := `{"id":"j1","inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[` + jsonIn + `]}]}`
	header := `{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","parameters":{"binary_data_size":32}}],"parameters":{"binary_data_output":true}}`
	binBody := header + string(data)
	hl := fmt.Sprintf("Inference-Header-Content-Length: %d\r\n", len(header))

	for _, tt := range []struct {
		name string
		raw  string
		n    int  // responses
		fast int  // of them the fast path answers
		half bool // close the write side after raw
	}{
		{"binary infer", rawPost("/v2/models/demo/infer", binBody, hl), 1, 1, false},
		{"JSON infer", rawPost("/v2/models/demo/infer", jsonBody), 1, 1, false},
		{"JSON infer, binary output asked per output", rawPost("/v2/models/demo/infer",
			`{"inputs":[{"name":"input","shape":[1,8],"datatype":"FP32","data":[`+jsonIn+`]}],"outputs":[{"name":"probabilities","parameters":{"binary_data":true}}]}`), 1, 1, false},
		{"by version", rawPost("/v2/models/demo/versions/1/infer", jsonBody), 1, 1, false},
		{"by label", rawPost("/v2/models/demo/labels/stable/infer", jsonBody), 1, 1, false},
		{"lower-case header names", strings.ReplaceAll(rawPost("/v2/models/demo/infer", binBody, hl), "Inference-Header-Content-Length", "inference-header-content-length"), 1, 1, false},
		{"unknown model", rawPost("/v2/models/nope/infer", jsonBody), 1, 1, false},
		{"unknown version", rawPost("/v2/models/demo/versions/9/infer", jsonBody), 1, 1, false},
		{"forbidden", rawPost("/v2/models/theirs/infer", `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`), 1, 1, false},
		{"bad JSON", rawPost("/v2/models/demo/infer", `{"inputs":`), 1, 1, false},
		{"wrong shape", rawPost("/v2/models/demo/infer", `{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}`), 1, 1, false},
		{"bad header length", rawPost("/v2/models/demo/infer", binBody, "Inference-Header-Content-Length: x1\r\n"), 1, 1, false},
		{"bad timeout", rawPost("/v2/models/demo/infer", jsonBody, "Starling-Timeout: soon\r\n"), 1, 1, false},
		{"timeout and route key", rawPost("/v2/models/demo/infer", jsonBody, "Starling-Timeout: 10s\r\n", "Starling-Route-Key: cam-1\r\n"), 1, 1, false},
		{"empty body", rawPost("/v2/models/demo/infer", ""), 1, 1, false},
		{"connection close", rawPost("/v2/models/demo/infer", jsonBody, "Connection: close\r\n"), 1, 1, false},
		{"error then close", rawPost("/v2/models/nope/infer", jsonBody, "Connection: close\r\n"), 1, 1, false},
		{"expect 100-continue", rawPost("/v2/models/demo/infer", jsonBody, "Expect: 100-continue\r\n"), 1, 1, false},
		{"truncated body", rawPost("/v2/models/demo/infer", jsonBody)[:len(rawPost("/v2/models/demo/infer", jsonBody))-5], 1, 1, true},
		{"pipelined", rawPost("/v2/models/demo/infer", binBody, hl) + rawPost("/v2/models/demo/infer", jsonBody) + rawGet("/v2/health/ready") + rawPost("/v2/models/nope/infer", "{}"), 4, 4, false},
		{"server live", rawGet("/v2/health/live"), 1, 1, false},
		{"server ready", rawGet("/v2/health/ready"), 1, 1, false},
		{"server metadata", rawGet("/v2"), 1, 1, false},
		{"model metadata", rawGet("/v2/models/demo"), 1, 1, false},
		{"model metadata by version", rawGet("/v2/models/demo/versions/1"), 1, 1, false},
		{"model ready by label", rawGet("/v2/models/demo/labels/stable/ready"), 1, 1, false},
		{"unknown model metadata", rawGet("/v2/models/nope"), 1, 1, false},
		{"forbidden metadata", rawGet("/v2/models/theirs/ready"), 1, 1, false},
		// Handed to net/http:
		{"chunked", "POST /v2/models/demo/infer HTTP/1.1\r\nHost: agent\r\nTransfer-Encoding: chunked\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(jsonBody), jsonBody), 1, 0, false},
		{"HTTP/1.0", strings.Replace(rawPost("/v2/models/demo/infer", jsonBody), "HTTP/1.1", "HTTP/1.0", 1), 1, 0, false},
		{"query string", rawPost("/v2/models/demo/infer?x=1", jsonBody), 1, 0, false},
		{"escaped path", rawPost("/v2/models/d%65mo/infer", jsonBody), 1, 0, false},
		{"unclean path", rawPost("/v2/models/demo/../demo/infer", jsonBody), 1, 0, false},
		{"GET on infer", rawGet("/v2/models/demo/infer"), 1, 0, false},
		{"POST on metadata", rawPost("/v2/models/demo", jsonBody), 1, 0, false},
		{"no content length", "POST /v2/models/demo/infer HTTP/1.1\r\nHost: agent\r\n\r\n", 1, 0, false},
		{"no host", "POST /v2/models/demo/infer HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}", 1, 0, false},
		{"two content lengths", rawPost("/v2/models/demo/infer", "{}", "Content-Length: 3\r\n"), 1, 0, false},
		{"bare LF", strings.ReplaceAll(rawPost("/v2/models/demo/infer", jsonBody), "\r\n", "\n"), 1, 0, false},
		{"invalid header name", rawPost("/v2/models/demo/infer", jsonBody, "Bad Name: x\r\n"), 1, 0, false},
		{"control byte in a value", rawPost("/v2/models/demo/infer", jsonBody, "X-A: a\x01b\r\n"), 1, 0, false},
		{"over the body limit", rawPost("/v2/models/demo/infer", strings.Repeat(" ", 100<<10)), 1, 0, false},
		{"huge head", rawPost("/v2/models/demo/infer", jsonBody, "X-Pad: "+strings.Repeat("p", 3*fastBufSize)+"\r\n"), 1, 0, false},
		{"metrics", rawGet("/v2/health/live") + rawGet("/no/such/endpoint") + rawPost("/v2/models/demo/infer", binBody, hl), 3, 1, false},
		{"hand-over mid-connection", rawPost("/v2/models/demo/infer", binBody, hl) + rawGet("/v2/models/demo/bogus") + rawPost("/v2/models/demo/infer", jsonBody), 3, 1, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, slowBefore := fast.fastAnswered.Load(), slow.fastAnswered.Load()
			// net/http closes after Connection: close, HTTP/1.0 and a
			// malformed request (400).
			closes := strings.Contains(tt.raw, "Connection: close") || strings.Contains(tt.raw, "HTTP/1.0") ||
				slices.Contains([]string{"no host", "two content lengths", "invalid header name", "control byte in a value"}, tt.name)
			got, gotClosed := exchange(t, fast.opts.Socket, tt.raw, tt.n, tt.half, closes)
			want, wantClosed := exchange(t, slow.opts.Socket, tt.raw, tt.n, tt.half, closes)
			for i := range want {
				if got[i] != want[i] {
					t.Errorf("response %d:\nfast path:\n%s\nnet/http:\n%s", i+1, got[i], want[i])
				}
			}
			if !tt.half && (gotClosed != closes || wantClosed != closes) {
				t.Errorf("connection closed after the answers: fast path %v, net/http %v, want %v", gotClosed, wantClosed, closes)
			}
			if n := fast.fastAnswered.Load() - before; n != int64(tt.fast) {
				t.Errorf("the fast path answered %d requests, want %d", n, tt.fast)
			}
			if n := slow.fastAnswered.Load() - slowBefore; n != 0 {
				t.Errorf("with DisableFastPath the fast path answered %d requests", n)
			}
		})
	}
	if testing.Verbose() {
		got, _ := exchange(t, fast.opts.Socket, rawPost("/v2/models/demo/infer", binBody, hl), 1, false, false)
		t.Logf("binary answer:\n%s", got[0])
	}
}

// TestFastPathShutdown: Serve returns promptly with idle keep-alive
// connections open on the fast path, closing them, and a request in
// flight is answered before its connection closes.
func TestFastPathShutdown(t *testing.T) {
	reg := NewRegistry()
	rm := &rowModel{b: 1, scale: 1, gate: make(chan struct{})}
	mustLoad(t, reg, "rows", "1", rm, true)
	dir, err := os.MkdirTemp("", "serve")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "agent.sock")
	s, err := New(Options{Socket: sock, Registry: reg, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	body := `{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`
	idle, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	io.WriteString(idle, rawPost("/v2/models/rows/infer", body))
	ib := bufio.NewReader(idle)
	if resp, err := http.ReadResponse(ib, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first answer: %v %v", resp, err)
	} else {
		io.ReadAll(resp.Body)
	}
	rm.hold.Store(true) // the busy connection's request waits for the gate
	runs := rm.runs.Load()
	io.WriteString(busy, rawPost("/v2/models/rows/infer", body))
	waitFor(t, "the busy request to start", func() bool { return rm.runs.Load() > runs })
	cancel()
	if _, err := ib.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("idle connection after shutdown began: %v, want EOF", err)
	}
	rm.gate <- struct{}{}
	bb := bufio.NewReader(busy)
	if resp, err := http.ReadResponse(bb, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("in-flight request during shutdown: %v %v", resp, err)
	} else {
		io.ReadAll(resp.Body)
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := bb.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("busy connection after its answer: %v, want EOF", err)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket not removed: %v", err)
	}
}
