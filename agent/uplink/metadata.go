package uplink

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/starling-edge/starling/shared/trust/tuf"
	"github.com/starling-edge/starling/shared/wire"
)

var _ tuf.Fetcher = (*Session)(nil)

// FetchMetadata asks the control plane for one TUF metadata file over
// meta/req and waits for the answer on meta/resp (tuf.Fetcher). A request
// with no answer within ChunkTimeout is asked again, up to ChunkAttempts
// times (ErrFetchTimeout). A file the repository does not hold returns
// tuf.ErrNotFound; one over maxLen returns tuf.ErrTooLarge.
func (s *Session) FetchMetadata(ctx context.Context, name string, maxLen int64) ([]byte, error) {
	resp := make(chan wire.MetadataResponse, 1)
	for attempt := 1; attempt <= s.opts.ChunkAttempts; attempt++ {
		id := fmt.Sprintf("%s-m%d", s.idBase, s.seq.Add(1))
		s.mu.Lock()
		s.metaWaiters[id] = resp
		s.mu.Unlock()
		b, _ := json.Marshal(wire.MetadataRequest{ID: id, Name: name})
		if s.ready.Load() {
			s.client.Publish(s.topic(wire.MetaReq), 1, false, b)
		}
		t := time.NewTimer(s.opts.ChunkTimeout)
		var r wire.MetadataResponse
		got := false
		select {
		case <-ctx.Done():
			t.Stop()
			s.dropMetaWaiter(id)
			return nil, ctx.Err()
		case r = <-resp:
			got = true
		case <-t.C:
		}
		t.Stop()
		s.dropMetaWaiter(id)
		if !got || r.Name != name {
			continue
		}
		switch {
		case r.NotFound:
			return nil, fmt.Errorf("uplink.FetchMetadata %s: %w", name, tuf.ErrNotFound)
		case r.Error != "":
			return nil, fmt.Errorf("uplink.FetchMetadata %s: %s: %w", name, r.Error, ErrRemote)
		case int64(len(r.Data)) > maxLen:
			return nil, fmt.Errorf("uplink.FetchMetadata %s: %d bytes, limit %d: %w", name, len(r.Data), maxLen, tuf.ErrTooLarge)
		}
		return r.Data, nil
	}
	return nil, fmt.Errorf("uplink.FetchMetadata %s: no answer after %d attempts of %s: %w", name, s.opts.ChunkAttempts, s.opts.ChunkTimeout, ErrFetchTimeout)
}

func (s *Session) dropMetaWaiter(id string) {
	s.mu.Lock()
	delete(s.metaWaiters, id)
	s.mu.Unlock()
}

// routeMetadata hands a metadata answer to its waiter. It must not block.
func (s *Session) routeMetadata(payload []byte) {
	var r wire.MetadataResponse
	if err := json.Unmarshal(payload, &r); err != nil {
		s.log.Warn("bad metadata response; ignored", "err", err)
		return
	}
	s.mu.Lock()
	ch := s.metaWaiters[r.ID]
	s.mu.Unlock()
	if ch == nil {
		return
	}
	select {
	case ch <- r:
	default:
	}
}
