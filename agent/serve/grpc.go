package serve

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/starling-edge/starling/agent/serve/inferencepb"
	"github.com/starling-edge/starling/shared/tensor"
)

// grpcService implements the OIP v2 gRPC service (inference.
// GRPCInferenceService) over the same registry and inference path as the
// REST API. Outputs are always sent as raw_output_contents, as Triton
// does; inputs may come as raw_input_contents or typed contents.
type grpcService struct {
	pb.UnimplementedGRPCInferenceServiceServer
	s *Server
}

var _ pb.GRPCInferenceServiceServer = (*grpcService)(nil)

// grpcErr turns an error into a status with its code; a full queue also
// sets the "retry-after-ms" trailer.
func grpcErr(ctx context.Context, err error) error {
	_, code := statusOf(err)
	var re *retryError
	if errors.As(err, &re) {
		grpc.SetTrailer(ctx, metadata.Pairs("retry-after-ms", strconv.FormatInt(max(re.after.Milliseconds(), 1), 10)))
	}
	return status.Error(code, err.Error())
}

func grpcCaller(ctx context.Context) Caller {
	if p, ok := peer.FromContext(ctx); ok {
		return callerOf(p.Addr)
	}
	return Caller{}
}

func (g *grpcService) ServerLive(context.Context, *pb.ServerLiveRequest) (*pb.ServerLiveResponse, error) {
	return &pb.ServerLiveResponse{Live: true}, nil
}

func (g *grpcService) ServerReady(context.Context, *pb.ServerReadyRequest) (*pb.ServerReadyResponse, error) {
	return &pb.ServerReadyResponse{Ready: g.s.opts.Registry.Ready()}, nil
}

func (g *grpcService) ServerMetadata(context.Context, *pb.ServerMetadataRequest) (*pb.ServerMetadataResponse, error) {
	return &pb.ServerMetadataResponse{Name: "starling", Version: g.s.opts.Version, Extensions: Extensions}, nil
}

func (g *grpcService) ModelReady(ctx context.Context, req *pb.ModelReadyRequest) (*pb.ModelReadyResponse, error) {
	m, err := g.s.lookup(grpcCaller(ctx), req.GetName(), req.GetVersion(), "")
	if errors.Is(err, ErrNotFound) {
		return &pb.ModelReadyResponse{Ready: false}, nil
	}
	if err != nil {
		return nil, grpcErr(ctx, err)
	}
	m.Release()
	return &pb.ModelReadyResponse{Ready: true}, nil
}

func (g *grpcService) ModelMetadata(ctx context.Context, req *pb.ModelMetadataRequest) (*pb.ModelMetadataResponse, error) {
	m, err := g.s.lookup(grpcCaller(ctx), req.GetName(), req.GetVersion(), "")
	if err != nil {
		return nil, grpcErr(ctx, err)
	}
	defer m.Release()
	md := g.s.metaOf(m, req.GetVersion() != "")
	conv := func(ts []tensorMeta) []*pb.ModelMetadataResponse_TensorMetadata {
		out := make([]*pb.ModelMetadataResponse_TensorMetadata, len(ts))
		for i, t := range ts {
			out[i] = &pb.ModelMetadataResponse_TensorMetadata{Name: t.Name, Datatype: string(t.Datatype), Shape: t.Shape}
		}
		return out
	}
	return &pb.ModelMetadataResponse{Name: md.Name, Versions: md.Versions, Platform: md.Platform, Inputs: conv(md.Inputs), Outputs: conv(md.Outputs)}, nil
}

func (g *grpcService) ModelInfer(ctx context.Context, in *pb.ModelInferRequest) (*pb.ModelInferResponse, error) {
	req, err := fromGRPC(in)
	if err != nil {
		return nil, grpcErr(ctx, err)
	}
	key := in.GetId()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("starling-route-key"); len(v) > 0 {
			key = v[0]
		}
	}
	resp, err := g.s.infer(ctx, req, grpcCaller(ctx), key)
	if err != nil {
		return nil, grpcErr(ctx, err)
	}
	out := &pb.ModelInferResponse{
		ModelName: resp.model, ModelVersion: resp.version, Id: resp.id,
		Parameters: map[string]*pb.InferParameter{
			"queue_time_us":   {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: resp.queue.Microseconds()}},
			"compute_time_us": {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: resp.compute.Microseconds()}},
			"batch_size":      {ParameterChoice: &pb.InferParameter_Int64Param{Int64Param: int64(resp.batch)}},
		},
		Outputs:           make([]*pb.ModelInferResponse_InferOutputTensor, len(resp.outputs)),
		RawOutputContents: make([][]byte, len(resp.outputs)),
	}
	for i, o := range resp.outputs {
		out.Outputs[i] = &pb.ModelInferResponse_InferOutputTensor{Name: o.t.Name, Datatype: string(o.t.DType), Shape: o.t.Shape}
		out.RawOutputContents[i] = o.t.Data
	}
	return out, nil
}

// fromGRPC converts a ModelInferRequest. Errors wrap ErrBadRequest; no
// input makes it panic.
func fromGRPC(in *pb.ModelInferRequest) (*request, error) {
	req := &request{model: in.GetModelName(), version: in.GetModelVersion(), id: in.GetId()}
	if p, ok := in.GetParameters()["timeout"]; ok {
		us := p.GetInt64Param()
		if us < 0 || us > math.MaxInt64/1000 {
			return nil, fmt.Errorf("parameter timeout %d: want microseconds >= 0: %w", us, ErrBadRequest)
		}
		req.timeout = durationUs(us)
	}
	raw := in.GetRawInputContents()
	if len(raw) > 0 && len(raw) != len(in.GetInputs()) {
		return nil, fmt.Errorf("%d raw_input_contents for %d inputs: %w", len(raw), len(in.GetInputs()), ErrBadRequest)
	}
	if len(in.GetInputs()) == 0 {
		return nil, fmt.Errorf("request has no inputs: %w", ErrBadRequest)
	}
	req.inputs = make([]reqInput, len(in.GetInputs()))
	for i, x := range in.GetInputs() {
		dt := tensor.DType(x.GetDatatype())
		n, err := checkShape(x.GetName(), x.GetShape())
		if err != nil {
			return nil, err
		}
		if !dt.Valid() {
			return nil, fmt.Errorf("input %q: datatype %q is not supported: %w", x.GetName(), dt, ErrBadRequest)
		}
		if n > math.MaxInt64/int64(dt.Size()) {
			return nil, fmt.Errorf("input %q: shape %v is too large: %w", x.GetName(), x.GetShape(), ErrBadRequest)
		}
		var data []byte
		if len(raw) > 0 {
			if x.GetContents() != nil {
				return nil, fmt.Errorf("input %q has contents while the request uses raw_input_contents: %w", x.GetName(), ErrBadRequest)
			}
			data = raw[i]
		} else if data, err = contentsBytes(x.GetContents(), dt, n); err != nil {
			return nil, fmt.Errorf("input %q: %v: %w", x.GetName(), err, ErrBadRequest)
		}
		req.inputs[i] = reqInput{name: x.GetName(), dtype: dt, shape: x.GetShape(), data: data}
	}
	for _, o := range in.GetOutputs() {
		req.outputs = append(req.outputs, reqOutput{name: o.GetName()})
	}
	return req, nil
}

// contentsBytes packs typed contents into n little-endian elements of dt.
func contentsBytes(c *pb.InferTensorContents, dt tensor.DType, n int64) ([]byte, error) {
	if c == nil {
		return nil, fmt.Errorf("has neither contents nor raw_input_contents")
	}
	var got int
	size := dt.Size()
	check := func(k int) error {
		if int64(k) != n {
			return fmt.Errorf("contents have %d elements, the shape needs %d", k, n)
		}
		return nil
	}
	switch dt {
	case tensor.Bool:
		got = len(c.BoolContents)
	case tensor.Int8, tensor.Int16, tensor.Int32:
		got = len(c.IntContents)
	case tensor.Uint8:
		got = len(c.UintContents)
	case tensor.Int64:
		got = len(c.Int64Contents)
	case tensor.Fp32:
		got = len(c.Fp32Contents)
	case tensor.Fp64:
		got = len(c.Fp64Contents)
	default:
		return nil, fmt.Errorf("datatype %s must be sent as raw_input_contents", dt)
	}
	if err := check(got); err != nil {
		return nil, err
	}
	b := make([]byte, int(n)*size)
	for i := 0; i < int(n); i++ {
		switch dt {
		case tensor.Bool:
			if c.BoolContents[i] {
				b[i] = 1
			}
		case tensor.Int8, tensor.Int16, tensor.Int32:
			v := c.IntContents[i]
			lo, hi := intRange(dt)
			if int64(v) < lo || int64(v) > hi {
				return nil, fmt.Errorf("contents[%d] = %d is outside %d..%d (datatype %s)", i, v, lo, hi, dt)
			}
			switch size {
			case 1:
				b[i] = byte(v)
			case 2:
				binary.LittleEndian.PutUint16(b[2*i:], uint16(v))
			default:
				binary.LittleEndian.PutUint32(b[4*i:], uint32(v))
			}
		case tensor.Uint8:
			if c.UintContents[i] > math.MaxUint8 {
				return nil, fmt.Errorf("contents[%d] = %d is outside 0..255 (datatype UINT8)", i, c.UintContents[i])
			}
			b[i] = byte(c.UintContents[i])
		case tensor.Int64:
			binary.LittleEndian.PutUint64(b[8*i:], uint64(c.Int64Contents[i]))
		case tensor.Fp32:
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(c.Fp32Contents[i]))
		case tensor.Fp64:
			binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(c.Fp64Contents[i]))
		}
	}
	return b, nil
}
