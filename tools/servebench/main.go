// Command servebench measures the agent's local inference API against the
// in-process engine call (the floor) and, optionally, a FastAPI + official
// TFLite interpreter peer (tools/servepeer), on one model, in one run:
// p50, p99 and throughput at each concurrency. See docs/BENCHMARKS.md.
//
//	go run ./tools/servebench -model testdata/models/demo/model.tflite [-peer 127.0.0.1:8501]
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/starling-edge/starling/agent/runtime"
	_ "github.com/starling-edge/starling/agent/runtime/gotflite"
	"github.com/starling-edge/starling/agent/serve"
	pb "github.com/starling-edge/starling/agent/serve/inferencepb"
	"github.com/starling-edge/starling/shared/tensor"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "servebench:", err)
		os.Exit(1)
	}
}

type target struct {
	name string
	call func(ctx context.Context) error
}

func run(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("servebench", flag.ContinueOnError)
	modelPath := fs.String("model", "testdata/models/demo/model.tflite", "TFLite model `file`")
	peer := fs.String("peer", "", "FastAPI peer `addr` (host:port) serving the same model as \"bench\"")
	dur := fs.Duration("duration", 3*time.Second, "measuring time per target and concurrency")
	concs := fs.String("concurrency", "1,8,32", "comma-separated concurrency levels")
	batch := fs.Int("batch", 0, "also serve with dynamic batching of this max size (model must be batchable)")
	batchDelay := fs.Duration("batch-delay", 500*time.Microsecond, "batching: how long a batch's first request waits for more")
	batchConc := fs.Int("batch-concurrency", 0, "batching: batches run at once (default GOMAXPROCS)")
	batchThreads := fs.Int("batch-threads", 1, "batching: threads one batch run may use")
	onlyBatching := fs.Bool("only-batching", false, "with -batch: measure only the floor, REST binary without batching and with it")
	if err := fs.Parse(args); err != nil {
		return err
	}
	art, err := os.ReadFile(*modelPath)
	if err != nil {
		return err
	}
	eng, err := runtime.Lookup("gotflite")
	if err != nil {
		return err
	}
	load := func() (runtime.Model, error) { return eng.Load(art, runtime.LoadOptions{}) }
	floor, err := load()
	if err != nil {
		return err
	}
	sig := floor.Signature()
	in := sig.Inputs[0]
	shape := slices.Clone(in.Shape)
	for i := range shape {
		if shape[i] < 0 {
			shape[i] = 1
		}
	}
	n := tensor.NumElements(shape)
	data := make([]byte, n*int64(in.DType.Size()))
	vals := make([]float32, n)
	for i := range vals {
		vals[i] = float32(i%7) / 7
		binary.LittleEndian.PutUint32(data[4*i:], mathFloat32bits(vals[i]))
	}
	inputs := []tensor.Tensor{{Name: in.Name, DType: in.DType, Shape: shape, Data: data}}

	reg := serve.NewRegistry()
	dir, err := os.MkdirTemp("", "servebench")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "agent.sock")
	models := map[string]serve.ModelOptions{"bench": {QueueSize: 1024}}
	if *batch > 0 {
		models["bench-batched"] = serve.ModelOptions{QueueSize: 1024, Concurrency: *batchConc, Batching: &serve.Batching{MaxBatchSize: *batch, MaxQueueDelay: *batchDelay}}
	}
	srv, err := serve.New(serve.Options{Socket: sock, Registry: reg, Models: models, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return err
	}
	for name := range models {
		m, err := load()
		if name == "bench-batched" {
			m, err = eng.Load(art, runtime.LoadOptions{Threads: *batchThreads})
		}
		if err != nil {
			return err
		}
		if err := reg.Load(ctx, name, "1", "tflite", m, true); err != nil {
			return err
		}
	}
	if err := srv.Listen(); err != nil {
		return err
	}
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); srv.Serve(sctx) }()
	defer func() { cancel(); wg.Wait() }()

	tr := &http.Transport{MaxIdleConnsPerHost: 256, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	hc := &http.Client{Transport: tr}
	header := fmt.Sprintf(`{"inputs":[{"name":%q,"shape":%s,"datatype":"FP32","parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`, in.Name, jsonInts(shape), len(data))
	binBody := append([]byte(header), data...)
	jsonBody, _ := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": in.Name, "shape": shape, "datatype": "FP32", "data": vals}}})
	post := func(c *http.Client, url string, body []byte, hl int) func(context.Context) error {
		return func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, "POST", url, bytes.NewReader(body))
			if hl > 0 {
				req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(hl))
			}
			resp, err := c.Do(req)
			if err != nil {
				return err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("%s", resp.Status)
			}
			return nil
		}
	}
	cc, err := grpc.NewClient("unix://"+srv.GRPCSocket(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	gc := pb.NewGRPCInferenceServiceClient(cc)
	greq := &pb.ModelInferRequest{ModelName: "bench", Inputs: []*pb.ModelInferRequest_InferInputTensor{{Name: in.Name, Datatype: "FP32", Shape: shape}}, RawInputContents: [][]byte{data}}

	targets := []target{
		{"in-process engine (floor)", func(ctx context.Context) error { _, err := floor.Run(ctx, inputs); return err }},
		{"agent REST binary, unix socket", post(hc, "http://agent/v2/models/bench/infer", binBody, len(header))},
		{"agent REST JSON, unix socket", post(hc, "http://agent/v2/models/bench/infer", jsonBody, 0)},
		{"agent gRPC, unix socket", func(ctx context.Context) error { _, err := gc.ModelInfer(ctx, greq); return err }},
	}
	if *batch > 0 {
		targets = append(targets, target{fmt.Sprintf("agent REST binary, batching <= %d", *batch), post(hc, "http://agent/v2/models/bench-batched/infer", binBody, len(header))})
	}
	if *onlyBatching && *batch > 0 {
		targets = []target{targets[0], targets[1], targets[len(targets)-1]}
	}
	if *peer != "" {
		pc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		targets = append(targets, target{"FastAPI + TFLite interpreter (peer)", post(pc, "http://"+*peer+"/v2/models/bench/infer", jsonBody, 0)})
	}
	fmt.Fprintf(stdout, "model %s, input %s %v (%d bytes), %v per cell, GOMAXPROCS %d\n\n", *modelPath, in.DType, shape, len(data), *dur, goMaxProcs())
	fmt.Fprintln(stdout, "| target | concurrency | p50 | p99 | throughput (req/s) | errors |")
	fmt.Fprintln(stdout, "|---|---:|---:|---:|---:|---:|")
	for _, t := range targets {
		for _, cs := range strings.Split(*concs, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(cs))
			if err != nil || c < 1 {
				return fmt.Errorf("concurrency %q", cs)
			}
			r := measure(ctx, t.call, c, *dur)
			fmt.Fprintf(stdout, "| %s | %d | %s | %s | %.0f | %d |\n", t.name, c, us(r.p50), us(r.p99), r.rps, r.errs)
			if ctx.Err() != nil {
				return nil
			}
		}
	}
	return nil
}

type result struct {
	p50, p99 time.Duration
	rps      float64
	errs     int
}

// measure runs call from c goroutines for d (after a short warm-up).
func measure(ctx context.Context, call func(context.Context) error, c int, d time.Duration) result {
	warm := time.Now().Add(d / 10)
	for time.Now().Before(warm) {
		call(ctx)
	}
	lat := make([][]time.Duration, c)
	errs := make([]int, c)
	end := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range c {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(end) && ctx.Err() == nil {
				t0 := time.Now()
				if err := call(ctx); err != nil {
					errs[w]++
					continue
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	e := 0
	for w := range c {
		all = append(all, lat[w]...)
		e += errs[w]
	}
	if len(all) == 0 {
		return result{errs: e}
	}
	slices.Sort(all)
	return result{p50: all[len(all)/2], p99: all[len(all)*99/100], rps: float64(len(all)) / elapsed.Seconds(), errs: e}
}

func us(d time.Duration) string { return fmt.Sprintf("%.1f us", float64(d.Nanoseconds())/1000) }

func jsonInts(v []int64) string { b, _ := json.Marshal(v); return string(b) }
