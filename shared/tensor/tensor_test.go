package tensor

import (
	"errors"
	"testing"
)

func TestValidate(t *testing.T) {
	good := FromFloat32("x", []int64{2, 2}, []float32{1, 2, 3, 4})
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	v, err := good.Float32s()
	if err != nil || len(v) != 4 || v[3] != 4 {
		t.Fatalf("Float32s = %v, %v", v, err)
	}
	short := good
	short.Shape = []int64{2, 3}
	if err := short.Validate(); !errors.Is(err, ErrShape) {
		t.Fatalf("short: %v", err)
	}
	neg := good
	neg.Shape = []int64{-1, 4}
	if err := neg.Validate(); !errors.Is(err, ErrShape) {
		t.Fatalf("negative: %v", err)
	}
	huge := good
	huge.Shape = []int64{1 << 62, 1 << 62}
	if err := huge.Validate(); !errors.Is(err, ErrShape) {
		t.Fatalf("overflow: %v", err)
	}
	bad := good
	bad.DType = "FLOAT"
	if err := bad.Validate(); err == nil {
		t.Fatal("unknown dtype accepted")
	}
}
