package serve

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/starling-edge/starling/agent/serve/inferencepb"
)

func grpcClient(t testing.TB, sock string) pb.GRPCInferenceServiceClient {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+DefaultGRPCSocket(sock), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewGRPCInferenceServiceClient(cc)
}

func rawFloats(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, f := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(f))
	}
	return b
}

func TestGRPC(t *testing.T) {
	uid := uint32(os.Getuid())
	reg := NewRegistry()
	_, sock := startServer(t, reg, Options{Models: map[string]ModelOptions{"theirs": {Allow: Allow{UIDs: []uint32{uid + 1}}}}})
	g := grpcClient(t, sock)
	ctx := context.Background()
	if r, err := g.ServerLive(ctx, &pb.ServerLiveRequest{}); err != nil || !r.Live {
		t.Fatalf("ServerLive: %v %v", r, err)
	}
	if r, err := g.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || r.Ready {
		t.Errorf("ServerReady with no model: %v %v, want false", r, err)
	}
	loadDemo(t, reg, "1")
	mustLoad(t, reg, "theirs", "1", &rowModel{b: 1, scale: 1}, true)
	if r, err := g.ServerReady(ctx, &pb.ServerReadyRequest{}); err != nil || !r.Ready {
		t.Errorf("ServerReady: %v %v", r, err)
	}
	if r, err := g.ServerMetadata(ctx, &pb.ServerMetadataRequest{}); err != nil || r.Name != "starling" || len(r.Extensions) == 0 {
		t.Errorf("ServerMetadata: %v %v", r, err)
	}
	if r, err := g.ModelReady(ctx, &pb.ModelReadyRequest{Name: "demo", Version: "1"}); err != nil || !r.Ready {
		t.Errorf("ModelReady: %v %v", r, err)
	}
	if r, err := g.ModelReady(ctx, &pb.ModelReadyRequest{Name: "demo", Version: "7"}); err != nil || r.Ready {
		t.Errorf("ModelReady of a version not served: %v %v, want false", r, err)
	}
	md, err := g.ModelMetadata(ctx, &pb.ModelMetadataRequest{Name: "demo"})
	if err != nil || md.Platform != "tflite" || len(md.Inputs) != 1 || md.Inputs[0].Name != "input" || md.Inputs[0].Datatype != "FP32" {
		t.Fatalf("ModelMetadata: %v %v", md, err)
	}
	in, want := demoCase(t)
	check := func(r *pb.ModelInferResponse, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("ModelInfer: %v", err)
		}
		if r.ModelVersion != "1" || len(r.RawOutputContents) != 1 || len(r.RawOutputContents[0]) != 12 || r.Outputs[0].Name != "probabilities" {
			t.Fatalf("ModelInfer response %v", r)
		}
		for i := range want {
			got := math.Float32frombits(binary.LittleEndian.Uint32(r.RawOutputContents[0][4*i:]))
			if math.Abs(float64(got-want[i])) > 1e-5 {
				t.Errorf("[%d] = %v, reference %v", i, got, want[i])
			}
		}
		if _, ok := r.Parameters["compute_time_us"]; !ok {
			t.Errorf("no compute_time_us parameter")
		}
	}
	tin := &pb.ModelInferRequest_InferInputTensor{Name: "input", Datatype: "FP32", Shape: []int64{1, 8}}
	check(g.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "demo", Inputs: []*pb.ModelInferRequest_InferInputTensor{tin}, RawInputContents: [][]byte{rawFloats(in)}}))
	typed := &pb.ModelInferRequest_InferInputTensor{Name: "input", Datatype: "FP32", Shape: []int64{1, 8}, Contents: &pb.InferTensorContents{Fp32Contents: in}}
	check(g.ModelInfer(ctx, &pb.ModelInferRequest{ModelName: "demo", ModelVersion: "stable", Inputs: []*pb.ModelInferRequest_InferInputTensor{typed}}))

	for _, tt := range []struct {
		name string
		req  *pb.ModelInferRequest
		code codes.Code
		msg  string
	}{
		{"unknown model", &pb.ModelInferRequest{ModelName: "nope", Inputs: []*pb.ModelInferRequest_InferInputTensor{tin}, RawInputContents: [][]byte{rawFloats(in)}}, codes.NotFound, "not served"},
		{"short raw", &pb.ModelInferRequest{ModelName: "demo", Inputs: []*pb.ModelInferRequest_InferInputTensor{tin}, RawInputContents: [][]byte{rawFloats(in[:3])}}, codes.InvalidArgument, "needs 32 bytes"},
		{"raw count", &pb.ModelInferRequest{ModelName: "demo", Inputs: []*pb.ModelInferRequest_InferInputTensor{tin}, RawInputContents: [][]byte{nil, nil}}, codes.InvalidArgument, "2 raw_input_contents for 1 inputs"},
		{"no contents", &pb.ModelInferRequest{ModelName: "demo", Inputs: []*pb.ModelInferRequest_InferInputTensor{tin}}, codes.InvalidArgument, "neither contents"},
		{"forbidden", &pb.ModelInferRequest{ModelName: "theirs", Inputs: []*pb.ModelInferRequest_InferInputTensor{tin}, RawInputContents: [][]byte{rawFloats(in)}}, codes.PermissionDenied, "allow list"},
	} {
		_, err := g.ModelInfer(ctx, tt.req)
		if st, _ := status.FromError(err); st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
			t.Errorf("%s: %v, want %v containing %q", tt.name, err, tt.code, tt.msg)
		}
	}
}

// TestHotSwapUnderLoad swaps the served version 20 times while REST and
// gRPC clients keep sending requests: not one may fail, and every answer
// comes from a version that was being served.
func TestHotSwapUnderLoad(t *testing.T) {
	reg := NewRegistry()
	loadDemo(t, reg, "0")
	c, sock := startServer(t, reg, Options{})
	g := grpcClient(t, sock)
	in, _ := demoCase(t)
	tin := &pb.ModelInferRequest_InferInputTensor{Name: "input", Datatype: "FP32", Shape: []int64{1, 8}}
	body := []byte(goodInfer)
	var (
		stop     atomic.Bool
		ok, fail atomic.Int64
		wg       sync.WaitGroup
		errs     = make(chan string, 16)
	)
	report := func(s string) {
		fail.Add(1)
		select {
		case errs <- s:
		default:
		}
	}
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if w%2 == 0 {
					req, _ := http.NewRequest("POST", "http://agent/v2/models/demo/infer", strings.NewReader(string(body)))
					resp, err := c.Do(req)
					if err != nil {
						report(err.Error())
						continue
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						report(resp.Status)
						continue
					}
				} else {
					_, err := g.ModelInfer(context.Background(), &pb.ModelInferRequest{ModelName: "demo", Inputs: []*pb.ModelInferRequest_InferInputTensor{tin}, RawInputContents: [][]byte{rawFloats(in)}})
					if err != nil {
						report(err.Error())
						continue
					}
				}
				ok.Add(1)
			}
		}()
	}
	for v := 1; v <= 20; v++ {
		before := ok.Load()
		loadDemo(t, reg, fmt.Sprint(v))
		waitFor(t, "requests on the new version", func() bool { return ok.Load() > before+5 })
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("request failed during swaps: %s", e)
	}
	if fail.Load() != 0 || reg.Version("demo") != "20" {
		t.Errorf("%d of %d requests failed; version %q", fail.Load(), ok.Load()+fail.Load(), reg.Version("demo"))
	}
	t.Logf("%d requests across 20 swaps, none failed", ok.Load())
}
