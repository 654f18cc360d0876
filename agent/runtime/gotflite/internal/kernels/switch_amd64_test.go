package kernels

// setAVX2 switches the assembly kernels off (false) or back to what the
// CPU has (true); setVNNI does the same for the VNNI int8 tile alone.
func setAVX2(on bool) {
	haveAVX2 = on && cpuHasAVX2
	haveVNNI = on && cpuHasVNNI
}

func setVNNI(on bool) { haveVNNI = on && cpuHasVNNI }

var cpuHasAVX2, cpuHasVNNI = haveAVX2, haveVNNI
