package serve

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"time"
	"unsafe"

	"github.com/starling-edge/starling/shared/tensor"
)

// request is one inference request, whatever protocol brought it.
type request struct {
	model, version, label, id string
	inputs                    []reqInput
	outputs                   []reqOutput
	binaryOutput              bool          // every output as binary data (binary_data_output)
	timeout                   time.Duration // 0: none asked for
}

type reqInput struct {
	name  string
	dtype tensor.DType
	shape []int64
	data  []byte // little-endian elements; may alias the request body
}

type reqOutput struct {
	name   string
	binary bool
}

// wireParams are the OIP v2 request parameters Starling reads; others are
// ignored, as the protocol asks.
type wireParams struct {
	BinaryDataSize   *int64 `json:"binary_data_size"`
	BinaryData       *bool  `json:"binary_data"`
	BinaryDataOutput *bool  `json:"binary_data_output"`
	// Timeout is the request's deadline in microseconds (as Triton).
	Timeout *int64 `json:"timeout"`
}

type wireInput struct {
	Name       string          `json:"name"`
	Shape      []int64         `json:"shape"`
	Datatype   tensor.DType    `json:"datatype"`
	Parameters wireParams      `json:"parameters"`
	Data       json.RawMessage `json:"data"`
}

type wireOutput struct {
	Name       string     `json:"name"`
	Parameters wireParams `json:"parameters"`
}

type wireRequest struct {
	ID         string       `json:"id"`
	Parameters wireParams   `json:"parameters"`
	Inputs     []wireInput  `json:"inputs"`
	Outputs    []wireOutput `json:"outputs"`
}

// maxDims bounds a tensor's rank.
const maxDims = 16

// parseInferRequest reads an OIP v2 REST inference request. headerLen is
// the Inference-Header-Content-Length (the binary tensor data extension):
// when > 0 the first headerLen bytes of body are the JSON header and the
// rest is the inputs' binary data, in input order, sized by each input's
// binary_data_size. Binary inputs alias body. Every error wraps
// ErrBadRequest; no input makes it panic.
func parseInferRequest(body []byte, headerLen int) (*request, error) {
	header, rest := body, []byte(nil)
	if headerLen > 0 {
		if headerLen > len(body) {
			return nil, fmt.Errorf("Inference-Header-Content-Length %d is past the end of the %d-byte body: %w", headerLen, len(body), ErrBadRequest)
		}
		header, rest = body[:headerLen], body[headerLen:]
	} else if headerLen < 0 {
		return nil, fmt.Errorf("Inference-Header-Content-Length %d is negative: %w", headerLen, ErrBadRequest)
	}
	var w wireRequest
	if err := json.Unmarshal(header, &w); err != nil {
		return nil, fmt.Errorf("invalid JSON request: %v: %w", err, ErrBadRequest)
	}
	if len(w.Inputs) == 0 {
		return nil, fmt.Errorf("request has no inputs: %w", ErrBadRequest)
	}
	req := &request{id: w.ID, inputs: make([]reqInput, len(w.Inputs))}
	if p := w.Parameters.BinaryDataOutput; p != nil {
		req.binaryOutput = *p
	}
	if p := w.Parameters.Timeout; p != nil {
		if *p < 0 || *p > int64(math.MaxInt64/int64(time.Microsecond)) {
			return nil, fmt.Errorf("parameter timeout %d: want microseconds >= 0: %w", *p, ErrBadRequest)
		}
		req.timeout = time.Duration(*p) * time.Microsecond
	}
	for i := range w.Inputs {
		x := &w.Inputs[i]
		in := &req.inputs[i]
		in.name, in.dtype, in.shape = x.Name, x.Datatype, x.Shape
		n, err := checkShape(x.Name, x.Shape)
		if err != nil {
			return nil, err
		}
		size := int64(x.Datatype.Size())
		if size == 0 {
			return nil, fmt.Errorf("input %q: datatype %q is not supported (use BOOL, UINT8, INT8, INT16, INT32, INT64, FP16, FP32 or FP64): %w", x.Name, x.Datatype, ErrBadRequest)
		}
		if n > math.MaxInt64/size {
			return nil, fmt.Errorf("input %q: shape %v is too large: %w", x.Name, x.Shape, ErrBadRequest)
		}
		if bs := x.Parameters.BinaryDataSize; bs != nil {
			if len(x.Data) > 0 && string(x.Data) != "null" {
				return nil, fmt.Errorf("input %q has both data and binary_data_size: %w", x.Name, ErrBadRequest)
			}
			if *bs < 0 || *bs > int64(len(rest)) {
				return nil, fmt.Errorf("input %q: binary_data_size %d, but only %d bytes of binary data remain: %w", x.Name, *bs, len(rest), ErrBadRequest)
			}
			if *bs != n*size {
				return nil, fmt.Errorf("input %q: binary_data_size %d, but shape %v of %s needs %d bytes: %w", x.Name, *bs, x.Shape, x.Datatype, n*size, ErrBadRequest)
			}
			in.data, rest = rest[:*bs:*bs], rest[*bs:]
			continue
		}
		if !jsonSupported(x.Datatype) {
			return nil, fmt.Errorf("input %q: datatype %s cannot be sent as JSON data; use the binary data extension: %w", x.Name, x.Datatype, ErrBadRequest)
		}
		in.data, err = decodeJSONData(x.Data, x.Datatype, n)
		if err != nil {
			return nil, fmt.Errorf("input %q: %v: %w", x.Name, err, ErrBadRequest)
		}
	}
	if len(rest) > 0 {
		return nil, fmt.Errorf("%d bytes of binary data after the last input that declares binary_data_size: %w", len(rest), ErrBadRequest)
	}
	for _, o := range w.Outputs {
		b := req.binaryOutput
		if o.Parameters.BinaryData != nil {
			b = *o.Parameters.BinaryData
		}
		req.outputs = append(req.outputs, reqOutput{name: o.Name, binary: b})
	}
	return req, nil
}

// checkShape returns the element count of shape.
func checkShape(name string, shape []int64) (int64, error) {
	if len(shape) > maxDims {
		return 0, fmt.Errorf("input %q: shape has %d dimensions, at most %d are supported: %w", name, len(shape), maxDims, ErrBadRequest)
	}
	n := tensor.NumElements(shape)
	if n < 0 {
		return 0, fmt.Errorf("input %q: shape %v has a negative dimension or too many elements: %w", name, shape, ErrBadRequest)
	}
	return n, nil
}

// jsonSupported lists the datatypes the JSON API carries.
func jsonSupported(dt tensor.DType) bool {
	switch dt {
	case tensor.Bool, tensor.Uint8, tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64, tensor.Fp32, tensor.Fp64:
		return true
	}
	return false
}

// decodeJSONData turns a JSON array of numbers or booleans (flat or
// nested, row-major) into n little-endian elements of dt. raw is valid
// JSON (it came out of encoding/json); the scan rejects anything but
// arrays, numbers and booleans. It allocates only the result.
func decodeJSONData(raw []byte, dt tensor.DType, n int64) ([]byte, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, fmt.Errorf("has no data")
	}
	size := int64(dt.Size())
	if n > int64(len(raw))/2+1 { // each element takes >= 2 bytes of JSON ("1,")
		return nil, fmt.Errorf("data has too few elements: the shape needs %d", n)
	}
	out := make([]byte, n*size)
	var k int64
	depth := 0
	for i := 0; i < len(raw); {
		c := raw[i]
		switch c {
		case ' ', '\t', '\n', '\r', ',':
			i++
			continue
		case '[':
			depth++
			i++
			continue
		case ']':
			depth--
			i++
			continue
		case '"', '{', 'n':
			return nil, fmt.Errorf("data[%d]: only numbers and booleans are supported", k)
		}
		if depth == 0 {
			return nil, fmt.Errorf("data must be an array")
		}
		j := i
		for j < len(raw) && raw[j] != ',' && raw[j] != ']' && raw[j] != ' ' && raw[j] != '\n' && raw[j] != '\t' && raw[j] != '\r' {
			j++
		}
		tok := raw[i:j]
		i = j
		if k >= n {
			return nil, fmt.Errorf("data has more elements than the %d the shape needs", n)
		}
		if err := putElem(out[k*size:], dt, tok, k); err != nil {
			return nil, err
		}
		k++
	}
	if k != n {
		return nil, fmt.Errorf("data has %d elements, the shape needs %d", k, n)
	}
	return out, nil
}

// putElem writes one JSON token as an element of dt.
func putElem(b []byte, dt tensor.DType, tok []byte, k int64) error {
	s := unsafe.String(unsafe.SliceData(tok), len(tok))
	if dt == tensor.Bool {
		switch s {
		case "true":
			b[0] = 1
		case "false":
			b[0] = 0
		default:
			return fmt.Errorf("data[%d] = %.32s is not a boolean (datatype BOOL)", k, s)
		}
		return nil
	}
	if s == "true" || s == "false" {
		return fmt.Errorf("data[%d] = %s is not a number (datatype %s)", k, s, dt)
	}
	switch dt {
	case tensor.Fp32:
		f, err := strconv.ParseFloat(s, 32)
		if err != nil {
			return fmt.Errorf("data[%d] = %.32s is not an FP32 number", k, s)
		}
		binary.LittleEndian.PutUint32(b, math.Float32bits(float32(f)))
	case tensor.Fp64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("data[%d] = %.32s is not an FP64 number", k, s)
		}
		binary.LittleEndian.PutUint64(b, math.Float64bits(f))
	default:
		iv, err := strconv.ParseInt(s, 10, 64)
		lo, hi := intRange(dt)
		if err != nil {
			// Accept integral values written with a fraction or exponent
			// (1.0, 1e2), as JSON encoders of floats produce them.
			f, ferr := strconv.ParseFloat(s, 64)
			if ferr != nil || f != math.Trunc(f) || f < float64(lo) || f > float64(hi) {
				return fmt.Errorf("data[%d] = %.32s is not an integer in %d..%d (datatype %s)", k, s, lo, hi, dt)
			}
			iv = int64(f)
		}
		if iv < lo || iv > hi {
			return fmt.Errorf("data[%d] = %.32s is not an integer in %d..%d (datatype %s)", k, s, lo, hi, dt)
		}
		switch dt.Size() {
		case 1:
			b[0] = byte(iv)
		case 2:
			binary.LittleEndian.PutUint16(b, uint16(iv))
		case 4:
			binary.LittleEndian.PutUint32(b, uint32(iv))
		case 8:
			binary.LittleEndian.PutUint64(b, uint64(iv))
		}
	}
	return nil
}

func intRange(dt tensor.DType) (int64, int64) {
	switch dt {
	case tensor.Uint8:
		return 0, math.MaxUint8
	case tensor.Int8:
		return math.MinInt8, math.MaxInt8
	case tensor.Int16:
		return math.MinInt16, math.MaxInt16
	case tensor.Int32:
		return math.MinInt32, math.MaxInt32
	}
	return math.MinInt64, math.MaxInt64
}

// appendJSONData appends t's elements as a flat JSON array.
func appendJSONData(b []byte, t *tensor.Tensor) ([]byte, error) {
	size := t.DType.Size()
	if !jsonSupported(t.DType) || len(t.Data)%size != 0 {
		return b, fmt.Errorf("output %q: datatype %s cannot be sent as JSON; ask for binary data", t.Name, t.DType)
	}
	d := t.Data
	n := len(d) / size
	b = append(b, '[')
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		switch t.DType {
		case tensor.Fp32:
			f := math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))
			b = appendFloat(b, float64(f), 32)
		case tensor.Fp64:
			b = appendFloat(b, math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])), 64)
		case tensor.Bool:
			b = strconv.AppendBool(b, d[i] != 0)
		case tensor.Uint8:
			b = strconv.AppendInt(b, int64(d[i]), 10)
		case tensor.Int8:
			b = strconv.AppendInt(b, int64(int8(d[i])), 10)
		case tensor.Int16:
			b = strconv.AppendInt(b, int64(int16(binary.LittleEndian.Uint16(d[2*i:]))), 10)
		case tensor.Int32:
			b = strconv.AppendInt(b, int64(int32(binary.LittleEndian.Uint32(d[4*i:]))), 10)
		case tensor.Int64:
			b = strconv.AppendInt(b, int64(binary.LittleEndian.Uint64(d[8*i:])), 10)
		}
	}
	return append(b, ']'), nil
}

// appendFloat writes a finite float as JSON; NaN and infinities, which
// JSON cannot carry, become null.
func appendFloat(b []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bits)
}
