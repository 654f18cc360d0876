package gotflite

import "testing"

// TestBinaryQuantTableMatchesArithmetic checks the int8 lookup-table
// kernel against the operator's arithmetic on every pair of inputs.
func TestBinaryQuantTableMatchesArithmetic(t *testing.T) {
	cases := []struct {
		name string
		q    binaryQuant
	}{
		{"add", binaryQuant{op: binAdd, in1Off: 3, in2Off: -7, outOff: 2, leftShift: 20,
			in1Mult: 1<<30 + 12345, in1Shift: -1, in2Mult: 1<<30 + 999, in2Shift: 0,
			outMult: 1<<30 + 777, outShift: -19, lo: -128, hi: 127}},
		{"sub with relu", binaryQuant{op: binSub, in1Off: -1, in2Off: 128, outOff: -20, leftShift: 20,
			in1Mult: 1<<31 - 1, in1Shift: 0, in2Mult: 1 << 30, in2Shift: -2,
			outMult: 1<<30 + 5, outShift: -18, lo: -20, hi: 127}},
		{"mul", binaryQuant{op: binMul, in1Off: 5, in2Off: 0, outOff: 1, outMult: 1<<30 + 31, outShift: -7, lo: -128, hi: 127}},
	}
	const n = 1 << 16
	x, y := make([]int8, n), make([]int8, n)
	for i := range n {
		x[i], y[i] = int8(i>>8), int8(i)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := &tinfo{index: 0, typ: tInt8, shape: []int{n}, n: n}
			b := &tinfo{index: 1, typ: tInt8, shape: []int{n}, n: n}
			out := &tinfo{index: 2, typ: tInt8, shape: []int{n}, n: n}
			bc, err := newBcast(a.shape, b.shape, out.shape)
			if err != nil {
				t.Fatal(err)
			}
			k := fastBinaryQuant(&tc.q, bc, a, b, out)
			if k == nil {
				t.Fatal("no table kernel for a same-shape int8 operator")
			}
			z := make([]int8, n)
			ex := &executor{v: views{i8: [][]int8{x, y, z}}}
			if err := k(ex); err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if want := int8(tc.q.apply(int32(x[i]), int32(y[i]))); z[i] != want {
					t.Fatalf("(%d, %d): table gives %d, arithmetic %d", x[i], y[i], z[i], want)
				}
			}
		})
	}
}
