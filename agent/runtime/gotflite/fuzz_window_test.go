package gotflite

import (
	"testing"
)

// FuzzWindowGeometry fuzzes the shape inference shared by CONV_2D,
// DEPTHWISE_CONV_2D and the pools: for any input size, window, stride,
// dilation and padding, newWindow accepts exactly the output shape TFLite
// computes, rejects others without panicking, and every filter tap the
// pools visit lies inside the input.
//
//	go test -run '^$' -fuzz FuzzWindowGeometry -fuzztime 1m ./agent/runtime/gotflite
func FuzzWindowGeometry(f *testing.F) {
	f.Add(uint8(32), uint8(32), uint8(3), uint8(3), uint8(2), uint8(2), uint8(1), uint8(1), false, int8(0))
	f.Add(uint8(25), uint8(5), uint8(25), uint8(5), uint8(1), uint8(1), uint8(1), uint8(1), true, int8(0))
	f.Add(uint8(7), uint8(9), uint8(3), uint8(2), uint8(1), uint8(3), uint8(2), uint8(1), false, int8(1))
	f.Fuzz(func(t *testing.T, inH, inW, kH, kW, sH, sW, dH, dW uint8, valid bool, skew int8) {
		padding := int8(padSame)
		if valid {
			padding = padValid
		}
		ih, iw, c := int(inH), int(inW), 2
		zero := kH == 0 || kW == 0 || sH == 0 || sW == 0 || dH == 0 || dW == 0
		oh, ow := 1, 1 // with a zero parameter newWindow must reject any shape
		if !zero {
			oh = outSize(padding, ih, int(kH), int(sH), int(dH))
			ow = outSize(padding, iw, int(kW), int(sW), int(dW))
		}
		oh += int(skew % 2)
		if oh < 0 || ow < 0 {
			return
		}
		in := &tinfo{name: "in", shape: []int{1, ih, iw, c}, n: ih * iw * c}
		out := &tinfo{name: "out", shape: []int{1, oh, ow, c}, n: oh * ow * c}
		w, err := newWindow(in, out, padding, int(kH), int(kW), int(sH), int(sW), int(dH), int(dW))
		switch {
		case zero || skew%2 != 0:
			if err == nil {
				t.Fatalf("accepted output %v for input %v, window %dx%d stride %dx%d dilation %dx%d padding %d", out.shape, in.shape, kH, kW, sH, sW, dH, dW, padding)
			}
			return
		case err != nil:
			t.Fatalf("rejected TFLite's own output shape %v: %v", out.shape, err)
		}
		if w.padH < 0 || w.padW < 0 {
			t.Fatalf("negative padding %d, %d", w.padH, w.padW)
		}
		if padding == padValid && (w.padH != 0 || w.padW != 0) {
			t.Fatalf("VALID padding is %d, %d", w.padH, w.padW)
		}
		visited := 0
		w.each(func(o, fy0, fy1, fx0, fx1, base int) {
			if o < 0 || o+w.outC > out.n {
				t.Fatalf("output offset %d outside %d elements", o, out.n)
			}
			for fy := fy0; fy < fy1; fy++ {
				for fx := fx0; fx < fx1; fx++ {
					i := base + (fy*w.inW+fx)*w.inC
					if i < 0 || i+w.inC > in.n {
						t.Fatalf("tap (%d, %d) reads input offset %d outside %d elements", fy, fx, i, in.n)
					}
				}
			}
			visited++
		})
		if visited != oh*ow {
			t.Fatalf("visited %d output positions, want %d", visited, oh*ow)
		}
	})
}
