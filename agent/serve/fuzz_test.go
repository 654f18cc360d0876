package serve

import (
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// fuzzSpecs is a signature the parsed requests are bound against, so the
// fuzzers also exercise binding.
var fuzzSpecs = []runtime.TensorSpec{{Name: "input", DType: tensor.Fp32, Shape: []int64{-1, 4}}}

// checkParsed asserts the parser's contract on any input: an error wraps
// ErrBadRequest; a request's inputs have data that fits shape and type.
func checkParsed(t *testing.T, req *request, err error) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ErrBadRequest) {
			t.Fatalf("error does not wrap ErrBadRequest: %v", err)
		}
		return
	}
	for _, in := range req.inputs {
		want := tensor.NumElements(in.shape) * int64(in.dtype.Size())
		if want < 0 || int64(len(in.data)) != want {
			t.Fatalf("input %q: %d bytes for shape %v of %s", in.name, len(in.data), in.shape, in.dtype)
		}
	}
	if _, err := bindInputs(req.inputs, fuzzSpecs); err != nil && !errors.Is(err, ErrBadRequest) {
		t.Fatalf("bind error does not wrap ErrBadRequest: %v", err)
	}
}

func FuzzJSONRequest(f *testing.F) {
	for _, s := range []string{
		`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`,
		`{"id":"a","inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","data":[[1,2,3,4],[5,6,7,8]]}],"outputs":[{"name":"o","parameters":{"binary_data":true}}]}`,
		`{"inputs":[{"name":"b","shape":[2],"datatype":"BOOL","data":[true,false]}],"parameters":{"timeout":1000}}`,
		`{"inputs":[{"name":"i","shape":[3],"datatype":"INT8","data":[-128,0,127]}]}`,
		`{"inputs":[{"name":"i","shape":[1],"datatype":"UINT8","data":[1e2]}]}`,
		`{"inputs":[{"name":"i","shape":[-1],"datatype":"FP32","data":[]}]}`,
		`{"inputs":[{"name":"i","shape":[9223372036854775807,2],"datatype":"FP64","data":[1]}]}`,
		`{"inputs":[]}`, `[]`, `{`, `null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseInferRequest(body, 0)
		checkParsed(t, req, err)
	})
}

func FuzzBinaryRequest(f *testing.F) {
	mk := func(header string, data ...float32) ([]byte, int) {
		b := []byte(header)
		for _, v := range data {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b, len(header)
	}
	for _, c := range []struct {
		h string
		d []float32
	}{
		{`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`, []float32{1, 2, 3, 4}},
		{`{"inputs":[{"name":"input","shape":[2,4],"datatype":"FP32","parameters":{"binary_data_size":32}}],"parameters":{"binary_data_output":true}}`, []float32{1, 2, 3, 4, 5, 6, 7, 8}},
		{`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":-1}}]}`, nil},
		{`{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16},"data":[1]}]}`, []float32{1, 2, 3, 4}},
		{`{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}},{"name":"b","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":4}}]}`, []float32{1, 2}},
	} {
		b, n := mk(c.h, c.d...)
		f.Add(b, n)
	}
	f.Fuzz(func(t *testing.T, body []byte, headerLen int) {
		req, err := parseInferRequest(body, headerLen)
		checkParsed(t, req, err)
	})
}

func FuzzTFServingRequest(f *testing.F) {
	for _, s := range []string{
		`{"instances":[[1,2,3,4]]}`, `{"inputs":[[1,2,3,4],[5,6,7,8]]}`, `{"inputs":{"input":[[1,2,3,4]]}}`,
		`{"instances":[{"input":[1,2,3,4]}]}`, `{"instances":[[1,2],[3]]}`, `{"instances":[]}`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _, err := parseTFRequest(body, fuzzSpecs)
		checkParsed(t, req, err)
	})
}
