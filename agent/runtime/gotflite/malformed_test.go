package gotflite

import (
	"encoding/binary"
	"errors"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
)

func demoModel(tb testing.TB) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "models", "demo", "model.tflite"))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// locate helpers find positions inside a valid model so that a test can
// corrupt exactly one thing.

// must is for locating parts of the valid demo model, which cannot fail;
// a failure is a bug in the test.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func subgraph0(tb testing.TB, b []byte) fbTable {
	tb.Helper()
	root := must(fbuf(b).root())
	sgs := must(root.vector(modelSubgraphs, 4))
	return must(sgs.tableAt(0))
}

// vectorPos returns the position of the length word of a vector field.
func vectorPos(tb testing.TB, t fbTable, slot int) uint64 {
	tb.Helper()
	pos, ok, err := t.ref(slot)
	if err != nil || !ok {
		tb.Fatalf("vector field %d: ok=%v err=%v", slot, ok, err)
	}
	return pos
}

func operator(tb testing.TB, b []byte, i int) fbTable {
	tb.Helper()
	ops := must(subgraph0(tb, b).vector(subgraphOperators, 4))
	return must(ops.tableAt(i))
}

// opcodeOf returns the operator code table that operator i uses.
func opcodeOf(tb testing.TB, b []byte, i int) fbTable {
	tb.Helper()
	idx := must(operator(tb, b, i).uint32Field(operatorOpcodeIndex, 0))
	root := must(fbuf(b).root())
	ocs := must(root.vector(modelOperatorCodes, 4))
	return must(ocs.tableAt(int(idx)))
}

func fieldPos(tb testing.TB, t fbTable, slot int, size uint64) uint64 {
	tb.Helper()
	pos, ok, err := t.field(slot, size)
	if err != nil || !ok {
		tb.Fatalf("field %d: ok=%v err=%v", slot, ok, err)
	}
	return pos
}

func put32(b []byte, pos uint64, v uint32) { binary.LittleEndian.PutUint32(b[pos:], v) }

func TestLoadMalformed(t *testing.T) {
	demo := demoModel(t)
	// The demo's operators, in order: RELU, FULLY_CONNECTED, FULLY_CONNECTED,
	// ADD, RESHAPE, ADD, RESHAPE, FULLY_CONNECTED, SOFTMAX.
	tests := []struct {
		name        string
		corrupt     func(t *testing.T, b []byte) []byte
		unsupported bool   // want ErrUnsupported rather than ErrInvalidModel
		want        string // part of the message
	}{
		{"empty", func(*testing.T, []byte) []byte { return nil }, false, "too short"},
		{"header only", func(t *testing.T, b []byte) []byte { return b[:8] }, false, "outside the file"},
		{"truncated half", func(t *testing.T, b []byte) []byte { return b[:len(b)/2] }, false, ""},
		{"root offset past end", func(t *testing.T, b []byte) []byte {
			put32(b, 0, uint32(len(b)+64))
			return b
		}, false, "outside the file"},
		{"root vtable past end", func(t *testing.T, b []byte) []byte {
			root := binary.LittleEndian.Uint32(b)
			put32(b, uint64(root), 0x80000000) // soffset pointing far past the end
			return b
		}, false, "vtable"},
		{"tensor vector too long", func(t *testing.T, b []byte) []byte {
			put32(b, vectorPos(t, subgraph0(t, b), subgraphTensors), 1<<30)
			return b
		}, false, "runs past the end of the file"},
		{"operator input out of range", func(t *testing.T, b []byte) []byte {
			put32(b, vectorPos(t, operator(t, b, 1), operatorInputs)+4, 999)
			return b
		}, false, "tensor index 999 out of range"},
		{"operator output negative", func(t *testing.T, b []byte) []byte {
			put32(b, vectorPos(t, operator(t, b, 0), operatorOutputs)+4, 0xfffffff0)
			return b
		}, false, "tensor index -16 out of range"},
		{"opcode index out of range", func(t *testing.T, b []byte) []byte {
			put32(b, fieldPos(t, operator(t, b, 1), operatorOpcodeIndex, 4), 77)
			return b
		}, false, "opcode index 77 out of range"},
		{"unsupported op", func(t *testing.T, b []byte) []byte {
			oc := opcodeOf(t, b, 8)                             // SOFTMAX
			b[fieldPos(t, oc, opcodeDeprecatedBuiltin, 1)] = 16 // LSTM
			put32(b, fieldPos(t, oc, opcodeBuiltinCode, 4), 16)
			return b
		}, true, "unsupported op LSTM"},
		{"read before written", func(t *testing.T, b []byte) []byte {
			// Operator 0 (RELU) reads the output of operator 1.
			out := binary.LittleEndian.Uint32(b[vectorPos(t, operator(t, b, 1), operatorOutputs)+4:])
			put32(b, vectorPos(t, operator(t, b, 0), operatorInputs)+4, out)
			return b
		}, false, "read before any operator writes it"},
		{"constant size", func(t *testing.T, b []byte) []byte {
			// Operator 1's weights: make them [16, 9], more than their data.
			w := binary.LittleEndian.Uint32(b[vectorPos(t, operator(t, b, 1), operatorInputs)+8:])
			tv := must(subgraph0(t, b).vector(subgraphTensors, 4))
			wt := must(tv.tableAt(int(w)))
			put32(b, vectorPos(t, wt, tensorShape)+8, 9)
			return b
		}, false, "needs 576 bytes, buffer 6 has 512"},
		{"output shape", func(t *testing.T, b []byte) []byte {
			// Operator 1's output: make it [1, 17] while the weights give 16.
			o := binary.LittleEndian.Uint32(b[vectorPos(t, operator(t, b, 1), operatorOutputs)+4:])
			tv := must(subgraph0(t, b).vector(subgraphTensors, 4))
			ot := must(tv.tableAt(int(o)))
			put32(b, vectorPos(t, ot, tensorShape)+8, 17)
			return b
		}, false, "operator 1 (FULLY_CONNECTED): output tensor 10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.corrupt(t, append([]byte(nil), demo...))
			m, err := New(Options{}).Load(b, runtime.LoadOptions{})
			if err == nil {
				m.Close()
				t.Fatal("Load succeeded on a corrupt model")
			}
			want := runtime.ErrInvalidModel
			if tt.unsupported {
				want = runtime.ErrUnsupported
			}
			if !errors.Is(err, want) {
				t.Fatalf("Load: %v, want it to wrap %v", err, want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load: %q does not say %q", err, tt.want)
			}
		})
	}
}

// TestLoadEveryPrefix loads every truncation of the demo model: each must
// fail cleanly (no prefix is a complete model, as the flatbuffer's buffers
// come last).
func TestLoadEveryPrefix(t *testing.T) {
	demo := demoModel(t)
	for n := 0; n < len(demo); n++ {
		m, err := New(Options{}).Load(demo[:n], runtime.LoadOptions{})
		if err == nil {
			m.Close()
			continue
		}
		if !errors.Is(err, runtime.ErrInvalidModel) && !errors.Is(err, runtime.ErrUnsupported) {
			t.Fatalf("prefix %d: %v wraps neither ErrInvalidModel nor ErrUnsupported", n, err)
		}
	}
}

// TestLoadGarbage feeds random bytes, and the demo with random bytes
// flipped: Load must fail cleanly or succeed, never panic.
func TestLoadGarbage(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	demo := demoModel(t)
	for i := 0; i < 2000; i++ {
		var b []byte
		if i%2 == 0 {
			b = make([]byte, rng.Intn(512))
			rng.Read(b)
		} else {
			b = append([]byte(nil), demo...)
			for j := 0; j < 1+rng.Intn(4); j++ {
				b[rng.Intn(len(b))] = byte(rng.Intn(256))
			}
		}
		m, err := New(Options{MaxArenaBytes: 1 << 20}).Load(b, runtime.LoadOptions{})
		if err != nil {
			if !errors.Is(err, runtime.ErrInvalidModel) && !errors.Is(err, runtime.ErrUnsupported) {
				t.Fatalf("case %d: %v wraps neither ErrInvalidModel nor ErrUnsupported", i, err)
			}
			continue
		}
		m.Close()
	}
}

func TestArenaLimit(t *testing.T) {
	_, err := New(Options{MaxArenaBytes: 64}).Load(demoModel(t), runtime.LoadOptions{})
	if !errors.Is(err, runtime.ErrInvalidModel) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("Load with a 64-byte arena limit: %v", err)
	}
}

// TestArenaPlan checks the memory plan of every test model: tensors whose
// lifetimes overlap never share arena memory, and every tensor fits.
func TestArenaPlan(t *testing.T) {
	paths, _ := filepath.Glob(filepath.Join("..", "..", "..", "testdata", "models", "*", "model.tflite"))
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		rm, err := New(Options{}).Load(b, runtime.LoadOptions{})
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		m := rm.(*model)
		var arenaTotal, tensorTotal int
		for i := range m.tensors {
			a := &m.tensors[i]
			if a.kind != kindArena {
				continue
			}
			tensorTotal += a.n
			if a.off < 0 || a.off+a.n > m.sizes[arenaSlot(a.typ)] {
				t.Errorf("%s: %s at [%d, %d) is outside its arena of %d", path, a, a.off, a.off+a.n, m.sizes[arenaSlot(a.typ)])
			}
			for j := i + 1; j < len(m.tensors); j++ {
				b := &m.tensors[j]
				if b.kind != kindArena || b.typ != a.typ || a.last < b.first || b.last < a.first {
					continue
				}
				if a.off < b.off+b.n && b.off < a.off+a.n && a.n > 0 && b.n > 0 {
					t.Errorf("%s: %s [%d, %d) and %s [%d, %d) are live together but overlap", path, a, a.off, a.off+a.n, b, b.off, b.off+b.n)
				}
			}
		}
		for _, s := range m.sizes {
			arenaTotal += s
		}
		if arenaTotal > tensorTotal {
			t.Errorf("%s: arenas of %d elements exceed the %d elements of all tensors", path, arenaTotal, tensorTotal)
		}
		t.Logf("%s: arenas %v elements for %d tensor elements", filepath.Base(filepath.Dir(path)), m.sizes, tensorTotal)
		rm.Close()
	}
}
