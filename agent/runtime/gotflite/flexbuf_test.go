package gotflite

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/starling-edge/starling/agent/runtime"
)

// FlexBuffers written by the flatbuffers Python package
// (flatbuffers.flexbuffers.Builder), the same format TFLite's converter
// writes custom options in.
var flexVectors = map[string]string{
	// {"big": 1<<40, "f": 0.25, "i8": -5, "s": "hi", "t": true, "u": uint 300}: 8-byte map.
	"mixed": "6938006269670066007400750073000268690006110e160a0f0e0000000000000c00000000000000010000000000000006000000000000000000000000010000000000000000d03ffbffffffffffffff400000000000000001000000000000002c01000000000000070f07146b0b362701",
	// {"x": indirect int -7, "y": indirect float 1.5, "z": indirect uint 9}
	"indirect": "7800f979000000000000c03f7a000903100e06030103140f0a18221c062401",
	// 42, not a map
	"int_root": "2a0401",
	// {"d": 0.1 as float64}
	"double": "64000103000000000500000000000000010000000000000001000000000000009a9999999999b93f0f092701",
}

// Detection post-processing options: the SSD converter's keys with
// max_detections 10, max_classes_per_detection 1, detections_per_class 5,
// thresholds 0.25 and 0.5, scales 10, 10, 5, 5 and num_classes 3, then
// variants of it.
var detectionOptionVectors = map[string]string{
	"ok":         "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a130b000000010000000b000000050000000000a040010000000a0000000000003f0000803e03000000000000000000a0400000204100002041060e06060e0e066a0e0e0e372601",
	"defaults":   "685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c617373657300775f7363616c6500785f7363616c6500795f7363616c6500097c755c4e3d2a1f18110000000c00000001000000090000000000a040010000000a0000000000003f0000803e030000000000a04000002041000020410e06060e0e060e0e0e2d2601",
	"regular":    "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a130b000000010000000b000000050000000000a040010000000a0000000000003f0000803e03000000010000000000a0400000204100002041060e06060e0e066a0e0e0e372601",
	"no_classes": "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000a95817a6153422f201912000b000000010000000a000000050000000000a040010000000a0000000000003f0000803e000000000000a0400000204100002041060e06060e0e6a0e0e0e322601",
	"iou0":       "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a130b000000010000000b000000050000000000a040010000000a000000000000000000803e03000000000000000000a0400000204100002041060e06060e0e066a0e0e0e372601",
	"maxcls0":    "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a130b000000010000000b000000050000000000a040000000000a0000000000003f0000803e03000000000000000000a0400000204100002041060e06060e0e066a0e0e0e372601",
	"negdet":     "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a130b000000010000000b000000050000000000a04001000000ffffffff0000003f0000803e03000000000000000000a0400000204100002041060e06060e0e066a0e0e0e372601",
	"hugedet":    "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a130b000000010000000b000000050000000000a04001000000000010000000003f0000803e03000000000000000000a0400000204100002041060e06060e0e066a0e0e0e372601",
	"bigclasses": "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a13000000000f0000000000000001000000000000000b000000000000000500000000000000000000000000144001000000000000000a00000000000000000000000000e03f000000000000d03f00000000000100000000000000000000000000000000144000000000000024400000000000002440070f07070f0f076b0f0f0f632701",
	"dpc0":       "646574656374696f6e735f7065725f636c61737300685f7363616c65006d61785f636c61737365735f7065725f646574656374696f6e006d61785f646574656374696f6e73006e6d735f696f755f7468726573686f6c64006e6d735f73636f72655f7468726573686f6c64006e756d5f636c6173736573007573655f726567756c61725f6e6d7300775f7363616c6500785f7363616c6500795f7363616c65000ba18d866d5f4e3b30211a130b000000010000000b000000000000000000a040010000000a0000000000003f0000803e03000000010000000000a0400000204100002041060e06060e0e066a0e0e0e372601",
}

func unhex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestFlexLookup(t *testing.T) {
	tests := []struct {
		vec, key string
		isNull   bool
		i        int64
		f        float32
		b        bool
		intErr   bool
	}{
		{vec: "mixed", key: "i8", i: -5, f: -5, b: true},
		{vec: "mixed", key: "big", i: 1 << 40, f: 1 << 40, b: true},
		{vec: "mixed", key: "f", i: 0, f: 0.25, b: true},
		{vec: "mixed", key: "t", i: 1, f: 1, b: true},
		{vec: "mixed", key: "u", i: 300, f: 300, b: true},
		{vec: "mixed", key: "s", intErr: true},
		{vec: "mixed", key: "missing", isNull: true},
		{vec: "mixed", key: "i", isNull: true}, // a prefix of "i8"
		{vec: "indirect", key: "x", i: -7, f: -7, b: true},
		{vec: "indirect", key: "y", i: 1, f: 1.5, b: true},
		{vec: "indirect", key: "z", i: 9, f: 9, b: true},
		{vec: "double", key: "d", i: 0, f: 0.1, b: true},
	}
	for _, tc := range tests {
		t.Run(tc.vec+"/"+tc.key, func(t *testing.T) {
			root, err := flexRoot(unhex(t, flexVectors[tc.vec]))
			if err != nil {
				t.Fatal(err)
			}
			v, err := root.lookup(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			if v.isNull() != tc.isNull {
				t.Fatalf("isNull = %v, want %v", v.isNull(), tc.isNull)
			}
			i, err := v.asInt64()
			if tc.intErr {
				if err == nil {
					t.Fatalf("asInt64 = %d, want an error", i)
				}
				return
			}
			if err != nil || i != tc.i {
				t.Errorf("asInt64 = %d, %v; want %d", i, err, tc.i)
			}
			if f, err := v.asFloat(); err != nil || f != tc.f {
				t.Errorf("asFloat = %g, %v; want %g", f, err, tc.f)
			}
			if b, err := v.asBool(); err != nil || b != tc.b {
				t.Errorf("asBool = %v, %v; want %v", b, err, tc.b)
			}
		})
	}
}

func TestFlexRootErrors(t *testing.T) {
	root, err := flexRoot(unhex(t, flexVectors["int_root"]))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := root.asInt64(); err != nil || v != 42 {
		t.Fatalf("root = %d, %v; want 42", v, err)
	}
	if _, err := root.lookup("x"); err == nil || !strings.Contains(err.Error(), "not a map") {
		t.Fatalf("lookup on an int: %v, want a not-a-map error", err)
	}
	for _, b := range [][]byte{nil, {1}, {0, 0}, {1, 4, 3}, {0, 0, 0, 0, 0, 0, 8}} {
		if _, err := flexRoot(b); err == nil {
			t.Errorf("flexRoot(%x) succeeded, want an error", b)
		}
	}
}

// TestFlexCorrupt reads every prefix and every single-byte corruption of
// each vector: the reader returns values or errors, never panics.
func TestFlexCorrupt(t *testing.T) {
	read := func(b []byte) {
		root, err := flexRoot(b)
		if err != nil {
			return
		}
		for _, k := range []string{"i8", "big", "f", "t", "u", "s", "x", "y", "z", "d", "max_detections", "nms_iou_threshold"} {
			v, err := root.lookup(k)
			if err != nil {
				continue
			}
			_, _ = v.asInt64()
			_, _ = v.asFloat()
			_, _ = v.asBool()
		}
		_, _ = parseDetectionOptions(b)
	}
	all := map[string]string{}
	for k, v := range flexVectors {
		all[k] = v
	}
	for k, v := range detectionOptionVectors {
		all["options/"+k] = v
	}
	for _, h := range all {
		b := unhex(t, h)
		for n := 0; n < len(b); n++ {
			read(b[:n])
		}
		for i := range b {
			for _, x := range []byte{0, 1, 0x7f, 0x80, 0xff, b[i] + 1, b[i] - 1} {
				c := append([]byte(nil), b...)
				c[i] = x
				read(c)
			}
		}
	}
}

// TestLoadDetectionOptionErrors corrupts the custom options of a real SSD
// model: Load rejects it as an invalid model and says why.
func TestLoadDetectionOptionErrors(t *testing.T) {
	orig, err := os.ReadFile(filepath.Join("..", "..", "..", "testdata", "models", "ssd_mobilenet_v2", "model.tflite"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, find, replace, want string
	}{
		{"missing key", "max_detections\x00", "max_detectionz\x00", "option max_detections is missing"},
		{"renamed op", "TFLite_Detection_PostProcess", "TFLite_Detection_PostProcesz", "unsupported op TFLite_Detection_PostProcesz"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			find, _ := strconv.Unquote(`"` + tc.find + `"`)
			repl, _ := strconv.Unquote(`"` + tc.replace + `"`)
			if bytes.Count(orig, []byte(find)) != 1 {
				t.Fatalf("%q occurs %d times in the model", find, bytes.Count(orig, []byte(find)))
			}
			b := bytes.Replace(orig, []byte(find), []byte(repl), 1)
			_, err := New(Options{}).Load(b, runtime.LoadOptions{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load: %v, want an error containing %q", err, tc.want)
			}
			if !errors.Is(err, runtime.ErrInvalidModel) && !errors.Is(err, runtime.ErrUnsupported) {
				t.Fatalf("Load: %v wraps neither ErrInvalidModel nor ErrUnsupported", err)
			}
		})
	}
}

func TestParseDetectionOptions(t *testing.T) {
	ok := detectionOptions{maxDetections: 10, maxClassesPerDetection: 1, detectionsPerClass: 5,
		scoreThreshold: 0.25, iouThreshold: 0.5, scaleY: 10, scaleX: 10, scaleH: 5, scaleW: 5, numClasses: 3}
	regular := ok
	regular.regularNMS = true
	defaults := ok
	defaults.detectionsPerClass = 100
	tests := []struct {
		vec     string
		want    detectionOptions
		wantErr string
	}{
		{vec: "ok", want: ok},
		{vec: "regular", want: regular},
		{vec: "defaults", want: defaults},
		{vec: "no_classes", wantErr: "num_classes is missing"},
		{vec: "iou0", wantErr: "nms_iou_threshold must be in (0, 1]"},
		{vec: "maxcls0", wantErr: "max_classes_per_detection must be positive"},
		{vec: "negdet", wantErr: "max_detections is negative"},
		{vec: "hugedet", wantErr: "too large"},
		{vec: "bigclasses", wantErr: "num_classes: flexbuffer: 1099511627776 does not fit in 32 bits"},
		{vec: "dpc0", wantErr: "detections_per_class must be positive"},
	}
	for _, tc := range tests {
		t.Run(tc.vec, func(t *testing.T) {
			got, err := parseDetectionOptions(unhex(t, detectionOptionVectors[tc.vec]))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

// TestStableArgSortDesc checks the sort the detection kernel orders scores
// with: decreasing, equal values in index order.
func TestStableArgSortDesc(t *testing.T) {
	tests := []struct {
		vals []float32
		want []int32
	}{
		{nil, []int32{}},
		{[]float32{1}, []int32{0}},
		{[]float32{1, 3, 2}, []int32{1, 2, 0}},
		{[]float32{2, 2, 1, 2, 3, 1}, []int32{4, 0, 1, 3, 2, 5}},
		{[]float32{0.5, 0.5, 0.5, 0.5, 0.5}, []int32{0, 1, 2, 3, 4}},
		{[]float32{-1, float32(math.Inf(1)), 0, float32(math.Inf(-1)), 0}, []int32{1, 2, 4, 0, 3}},
	}
	for _, tc := range tests {
		idx, tmp := make([]int32, len(tc.vals)), make([]int32, len(tc.vals))
		stableArgSortDesc(idx, tmp, tc.vals)
		if len(idx) != len(tc.want) {
			t.Fatalf("%v: got %v, want %v", tc.vals, idx, tc.want)
		}
		for i := range idx {
			if idx[i] != tc.want[i] {
				t.Fatalf("%v: got %v, want %v", tc.vals, idx, tc.want)
			}
		}
	}
}

// FuzzDetectionOptions feeds arbitrary bytes to the FlexBuffers reader
// through the detection post-processing options parser, seeded with real
// and edited option maps. It must return options that pass their checks
// or an error, never panic or run long.
//
//	go test -run '^$' -fuzz FuzzDetectionOptions -fuzztime 1m ./agent/runtime/gotflite
func FuzzDetectionOptions(f *testing.F) {
	for _, h := range detectionOptionVectors {
		f.Add(unhex(f, h))
	}
	for _, h := range flexVectors {
		f.Add(unhex(f, h))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := parseDetectionOptions(b)
		if err != nil {
			return
		}
		if err := o.check(); err != nil {
			t.Fatalf("parsed options fail their check: %v", err)
		}
		if o.maxDetections*o.maxClassesPerDetection > maxDetectionSlots {
			t.Fatalf("parsed options have %d x %d slots", o.maxDetections, o.maxClassesPerDetection)
		}
	})
}
