package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/starling-edge/starling/shared/trust"
	"github.com/starling-edge/starling/shared/wire"
)

// TestResumeAfterKill kills the agent with SIGKILL halfway through a
// download, restarts it on the same data directory, and checks that the
// download resumes (nothing is fetched from offset 0 again) and ends with
// the right model active.
func TestResumeAfterKill(t *testing.T) {
	for name, broker := range brokers(t) {
		t.Run(name, func(t *testing.T) {
			f := newFleet(t, broker(t))
			ref := loadReference(t)
			dataDir := filepath.Join(f.dir, "agent")
			const chunk = 512
			a := f.startAgent("cam-2", dataDir, "--chunk-size", fmt.Sprint(chunk))
			f.waitOnline("cam-2")
			file := f.push("1")
			art, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			digest := trust.Digest(art)
			if len(art) < 4*chunk {
				t.Fatalf("artifact of %d bytes is too small for this test", len(art))
			}

			// Serve the first three chunks, then hold every request back.
			var mu sync.Mutex
			served := 0
			stalled := make(chan struct{})
			f.setHook(func(_ string, req wire.FetchRequest) bool {
				mu.Lock()
				defer mu.Unlock()
				if req.Digest != digest {
					return true
				}
				if served < 3 {
					served++
					return true
				}
				if served == 3 {
					served++
					close(stalled)
				}
				return false
			})
			f.assign("cam-2", "1")
			select {
			case <-stalled:
			case <-time.After(30 * time.Second):
				t.Fatalf("agent did not fetch past three chunks; log:\n%s", a.log)
			}
			// Let the agent persist what it received, then kill it hard.
			time.Sleep(300 * time.Millisecond)
			a.kill()

			before := len(f.fetchLog())
			f.setHook(nil)
			a = f.startAgent("cam-2", dataDir, "--chunk-size", fmt.Sprint(chunk))
			f.waitModelState("cam-2", "1", wire.StateActive)
			checkServes(t, a, ref, "1")

			after := f.fetchLog()[before:]
			var offsets []int64
			for _, r := range after {
				if r.Digest == digest {
					offsets = append(offsets, r.Offset)
				}
			}
			if len(offsets) == 0 {
				t.Fatal("no fetch after restart")
			}
			for _, off := range offsets {
				if off == 0 {
					t.Fatalf("the restarted agent fetched from offset 0 again (offsets %v): the download started over", offsets)
				}
			}
			t.Logf("resumed at offsets %v of %d bytes", offsets, len(art))
		})
	}
}
