package gotflite

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
)

// constOf returns the bytes (inside b) of input j of the first operator
// named op in model b, so that a test can corrupt one constant.
func constOf(tb testing.TB, b []byte, op string, j int) []byte {
	tb.Helper()
	fm, err := decodeModel(fbuf(b))
	if err != nil {
		tb.Fatal(err)
	}
	sg := &fm.subgraphs[0]
	for _, o := range sg.ops {
		if opName(fm.opcodes[o.opcode].builtin) != op {
			continue
		}
		t := sg.tensors[o.inputs[j]]
		data := fm.buffers[t.buffer].data
		if len(data) == 0 {
			tb.Fatalf("%s input %d is not a constant", op, j)
		}
		return data
	}
	tb.Fatalf("model has no %s", op)
	return nil
}

// TestLoadShapeOpErrors corrupts one constant of an operator-coverage model
// per case: Load rejects the model as invalid and names the problem.
func TestLoadShapeOpErrors(t *testing.T) {
	read := func(name string) []byte {
		b, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "models", name, "model.tflite"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	cov, cov2 := read("op_coverage"), read("op_coverage2")
	put := func(d []byte, i int, v int32) { binary.LittleEndian.PutUint32(d[4*i:], uint32(v)) }
	tests := []struct {
		name, op string
		model    []byte
		input    int
		mutate   func(d []byte)
		want     string
	}{
		{"transpose repeats an axis", "TRANSPOSE", cov, 1, func(d []byte) { put(d, 1, 0) }, "is not a permutation"},
		{"transpose axis out of range", "TRANSPOSE", cov, 1, func(d []byte) { put(d, 3, 9) }, "is not a permutation"},
		{"gather index past the axis", "GATHER", cov, 1, func(d []byte) { put(d, 0, 99) }, "index 99 is outside axis of size 8"},
		{"gather negative index", "GATHER", cov, 1, func(d []byte) { put(d, 0, -1) }, "index -1 is outside axis"},
		{"slice stride 0", "STRIDED_SLICE", cov, 3, func(d []byte) { put(d, 0, 0) }, "stride of axis 0 is 0"},
		{"slice end changes the shape", "STRIDED_SLICE", cov, 2, func(d []byte) { put(d, 3, 2) }, "has shape"},
		{"resize size differs from the output", "RESIZE_BILINEAR", cov, 1, func(d []byte) { put(d, 0, 14) }, "has shape"},
		{"resize size not positive", "RESIZE_NEAREST_NEIGHBOR", cov, 1, func(d []byte) { put(d, 1, 0) }, "want two positive values"},
		{"split axis out of range", "SPLIT", cov, 0, func(d []byte) { put(d, 0, 7) }, "axis 7 out of range"},
		{"split into uneven parts", "SPLIT", cov, 0, func(d []byte) { put(d, 0, 0) }, "does not split into 2"},
		{"split changes the output shape", "SPLIT", cov, 0, func(d []byte) { put(d, 0, 1) }, "has shape [1 16 12 4], want [1 8 12 8]"},
		{"slice past the end", "SLICE", cov2, 1, func(d []byte) { put(d, 1, 7) }, "axis 1: begin 7 size 5 is outside its size 8"},
		{"split_v sizes do not add up", "SPLIT_V", cov2, 1, func(d []byte) { put(d, 0, 3) }, "do not add up to axis size 12"},
		{"split_v negative size", "SPLIT_V", cov2, 1, func(d []byte) { put(d, 0, -2) }, "negative size"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), tc.model...)
			tc.mutate(constOf(t, b, tc.op, tc.input))
			m, err := New(Options{}).Load(b, runtime.LoadOptions{})
			if err == nil {
				m.Close()
				t.Fatalf("Load succeeded, want an error containing %q", tc.want)
			}
			if !errors.Is(err, runtime.ErrInvalidModel) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want ErrInvalidModel containing %q", err, tc.want)
			}
		})
	}
}
