package main

import (
	"math"
	goruntime "runtime"
)

func mathFloat32bits(f float32) uint32 { return math.Float32bits(f) }

func goMaxProcs() int { return goruntime.GOMAXPROCS(0) }
