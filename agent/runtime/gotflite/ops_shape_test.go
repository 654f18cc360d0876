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

// TestLoadShapeOpErrors corrupts one constant of the op_coverage model per
// case: Load rejects the model as invalid and names the problem.
func TestLoadShapeOpErrors(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "models", "op_coverage", "model.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	put := func(d []byte, i int, v int32) { binary.LittleEndian.PutUint32(d[4*i:], uint32(v)) }
	tests := []struct {
		name, op string
		input    int
		mutate   func(d []byte)
		want     string
	}{
		{"transpose repeats an axis", "TRANSPOSE", 1, func(d []byte) { put(d, 1, 0) }, "is not a permutation"},
		{"transpose axis out of range", "TRANSPOSE", 1, func(d []byte) { put(d, 3, 9) }, "is not a permutation"},
		{"gather index past the axis", "GATHER", 1, func(d []byte) { put(d, 0, 99) }, "index 99 is outside axis of size 8"},
		{"gather negative index", "GATHER", 1, func(d []byte) { put(d, 0, -1) }, "index -1 is outside axis"},
		{"slice stride 0", "STRIDED_SLICE", 3, func(d []byte) { put(d, 0, 0) }, "stride of axis 0 is 0"},
		{"slice end changes the shape", "STRIDED_SLICE", 2, func(d []byte) { put(d, 3, 2) }, "has shape"},
		{"resize size differs from the output", "RESIZE_BILINEAR", 1, func(d []byte) { put(d, 0, 14) }, "has shape"},
		{"resize size not positive", "RESIZE_NEAREST_NEIGHBOR", 1, func(d []byte) { put(d, 1, 0) }, "want two positive values"},
		{"split axis out of range", "SPLIT", 0, func(d []byte) { put(d, 0, 7) }, "axis 7 out of range"},
		{"split into uneven parts", "SPLIT", 0, func(d []byte) { put(d, 0, 0) }, "does not split into 2"},
		{"split changes the output shape", "SPLIT", 0, func(d []byte) { put(d, 0, 1) }, "has shape [1 16 12 4], want [1 8 12 8]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := append([]byte(nil), orig...)
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
