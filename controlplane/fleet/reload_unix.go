//go:build unix

package fleet

import "syscall"

// reload asks a Mosquitto process to reload its configuration.
func reload(pid int) error { return syscall.Kill(pid, syscall.SIGHUP) }
