package tuf

import (
	"context"
	"testing"
	"time"

	"github.com/starling-edge/starling/shared/trust"
)

// TestAllowExpiredTargets: once targets expire, a device refuses them, but
// the operator's tool (AllowExpiredTargets) still verifies them so it can
// sign the next version on top; a forged targets is refused either way.
func TestAllowExpiredTargets(t *testing.T) {
	ctx := context.Background()
	for _, stored := range []bool{false, true} {
		name := map[bool]string{false: "fetched", true: "stored"}[stored]
		t.Run(name, func(t *testing.T) {
			r := newRepo(t)
			r.targetsExpiry = time.Hour
			r.publish("demo", "1")
			operator := &MemoryStore{}
			now := r.now
			c, err := NewClient(ClientOptions{Root: r.rootFile(1), Store: operator, Fetcher: r.serve,
				Now: func() time.Time { return now }, AllowExpiredTargets: true})
			if err != nil {
				t.Fatal(err)
			}
			if stored {
				if err := c.Refresh(ctx); err != nil { // targets trusted while fresh
					t.Fatal(err)
				}
			}
			now = now.Add(2 * time.Hour)
			r.now = now
			r.online(r.targetsVersion, r.snap[0], r.ts[0]) // fresh timestamp and snapshot

			d := r.device()
			*d.now = now
			wantCheck(t, d.c.Refresh(ctx), trust.ErrExpired, "expiry")

			if err := c.Refresh(ctx); err != nil {
				t.Fatalf("operator refresh over expired targets: %v", err)
			}
			if _, err := c.Model("demo", "1", "", "1.0.0"); err != nil {
				t.Fatalf("expired targets not usable as the base of the next version: %v", err)
			}
			if b, _ := operator.LoadMetadata(RoleTargets); b == nil {
				t.Fatal("verified targets not stored")
			}

			// Expired and signed by a key root does not name: refused.
			r.targetsMD[ModelPath("demo", "2", "")] = entry{[]byte("v2"), Custom{Kind: KindModel, Name: "demo", Version: "2", Format: "tflite"}}
			r.targetsExpiry = -time.Minute
			r.signTargets(mustKey(t))
			r.online(r.targetsVersion, r.snap[0], r.ts[0])
			wantCheck(t, c.Refresh(ctx), trust.ErrUnknownKey, "unknown-key")
		})
	}
}
