package serve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"

	"github.com/starling-edge/starling/shared/tensor"
)

// flatten appends the leaves of a JSON array (flat or nested, row-major)
// to out. Leaves are json.Number or bool.
func flatten(v any, out []any) ([]any, error) {
	switch x := v.(type) {
	case []any:
		for _, e := range x {
			var err error
			if out, err = flatten(e, out); err != nil {
				return nil, err
			}
		}
		return out, nil
	case json.Number, bool:
		return append(out, x), nil
	case nil:
		return nil, fmt.Errorf("data contains null")
	default:
		return nil, fmt.Errorf("data contains %T; only numbers and booleans are supported", v)
	}
}

// decodeData turns a JSON "data" value into little-endian tensor bytes.
func decodeData(raw json.RawMessage, dt tensor.DType) ([]byte, int, error) {
	if len(raw) == 0 {
		return nil, 0, fmt.Errorf("has no data")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, 0, fmt.Errorf("data: %v", err)
	}
	if _, ok := v.([]any); !ok {
		return nil, 0, fmt.Errorf("data must be an array")
	}
	leaves, err := flatten(v, nil)
	if err != nil {
		return nil, 0, err
	}
	size := dt.Size()
	out := make([]byte, len(leaves)*size)
	for i, l := range leaves {
		b := out[i*size:]
		if dt == tensor.Bool {
			bv, ok := l.(bool)
			if !ok {
				return nil, 0, fmt.Errorf("data[%d] = %v is not a boolean (datatype BOOL)", i, l)
			}
			if bv {
				b[0] = 1
			}
			continue
		}
		n, ok := l.(json.Number)
		if !ok {
			return nil, 0, fmt.Errorf("data[%d] = %v is not a number (datatype %s)", i, l, dt)
		}
		switch dt {
		case tensor.Fp32, tensor.Fp64:
			f, err := n.Float64()
			if err != nil {
				return nil, 0, fmt.Errorf("data[%d] = %s is not a %s number", i, n, dt)
			}
			if dt == tensor.Fp32 {
				if math.Abs(f) > math.MaxFloat32 {
					return nil, 0, fmt.Errorf("data[%d] = %s overflows FP32", i, n)
				}
				binary.LittleEndian.PutUint32(b, math.Float32bits(float32(f)))
			} else {
				binary.LittleEndian.PutUint64(b, math.Float64bits(f))
			}
		default:
			iv, err := n.Int64()
			lo, hi := intRange(dt)
			if err != nil || iv < lo || iv > hi {
				return nil, 0, fmt.Errorf("data[%d] = %s is not an integer in %d..%d (datatype %s)", i, n, lo, hi, dt)
			}
			switch size {
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
	}
	return out, len(leaves), nil
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

// jsonSupported lists the datatypes the JSON API carries.
func jsonSupported(dt tensor.DType) bool {
	switch dt {
	case tensor.Bool, tensor.Uint8, tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64, tensor.Fp32, tensor.Fp64:
		return true
	}
	return false
}

// encodeData turns tensor bytes into a flat JSON-ready slice.
func encodeData(t *tensor.Tensor) (any, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	d := t.Data
	size := t.DType.Size()
	n := len(d) / size
	switch t.DType {
	case tensor.Fp32:
		return t.Float32s()
	case tensor.Fp64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:]))
		}
		return out, nil
	case tensor.Bool:
		out := make([]bool, n)
		for i := range out {
			out[i] = d[i] != 0
		}
		return out, nil
	case tensor.Uint8, tensor.Int8, tensor.Int16, tensor.Int32, tensor.Int64:
		out := make([]int64, n)
		for i := range out {
			switch t.DType {
			case tensor.Uint8:
				out[i] = int64(d[i])
			case tensor.Int8:
				out[i] = int64(int8(d[i]))
			case tensor.Int16:
				out[i] = int64(int16(binary.LittleEndian.Uint16(d[2*i:])))
			case tensor.Int32:
				out[i] = int64(int32(binary.LittleEndian.Uint32(d[4*i:])))
			case tensor.Int64:
				out[i] = int64(binary.LittleEndian.Uint64(d[8*i:]))
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("output %q: datatype %s cannot be sent as JSON", t.Name, t.DType)
}
