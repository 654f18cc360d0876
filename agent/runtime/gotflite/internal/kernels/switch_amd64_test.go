package kernels

func setAVX2(on bool) { haveAVX2 = on && cpuHasAVX2 }

var cpuHasAVX2 = haveAVX2
