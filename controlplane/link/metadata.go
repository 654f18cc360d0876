package link

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/starling-edge/starling/shared/wire"
)

// MetadataSource serves TUF metadata files by name. It returns an error
// wrapping ErrMetadataNotFound for a file the repository does not hold.
type MetadataSource func(name string) ([]byte, error)

// ErrMetadataNotFound is what a MetadataSource wraps for a missing file.
var ErrMetadataNotFound = errors.New("link: no such metadata file")

// enqueueMetadata hands a metadata request to the worker pool (the same
// bounded queue as artifact fetches).
func (l *Link) enqueueMetadata(id string, payload []byte) error {
	if len(payload) > maxFetchRequest {
		return fmt.Errorf("metadata request is %d bytes, limit %d", len(payload), maxFetchRequest)
	}
	var req wire.MetadataRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return fmt.Errorf("metadata request is not valid JSON: %w", err)
	}
	if len(req.ID) > 256 || len(req.Name) > 256 {
		return fmt.Errorf("metadata request id or name over 256 bytes")
	}
	select {
	case <-l.ctx.Done():
		return ErrClosed
	case l.fetchQ <- fetchJob{deviceID: id, meta: &req}:
		return nil
	default:
		return fmt.Errorf("fetch queue full (%d waiting): metadata request %q dropped", cap(l.fetchQ), req.ID)
	}
}

func (l *Link) answerMetadata(job fetchJob) {
	req := job.meta
	resp := wire.MetadataResponse{ID: req.ID, Name: req.Name}
	if hook := l.opts.MetadataHook; hook != nil {
		if data, ok := hook(job.deviceID, req.Name); ok {
			resp.Data = data
			l.publishMetadata(job.deviceID, resp)
			return
		}
	}
	switch {
	case l.opts.Metadata == nil:
		resp.NotFound = true
	default:
		data, err := l.opts.Metadata(req.Name)
		switch {
		case errors.Is(err, ErrMetadataNotFound):
			resp.NotFound = true
		case err != nil:
			l.log.Error("reading metadata", "name", req.Name, "err", err)
			resp.Error = fmt.Sprintf("metadata %s unavailable", req.Name)
		default:
			resp.Data = data
		}
	}
	l.publishMetadata(job.deviceID, resp)
}

func (l *Link) publishMetadata(deviceID string, resp wire.MetadataResponse) {
	msg, err := json.Marshal(resp)
	if err != nil {
		l.log.Error("encoding metadata response", "device", deviceID, "err", err)
		return
	}
	tok := l.client.Publish(wire.DeviceTopic(deviceID, wire.MetaResp), 1, false, msg)
	if !tok.WaitTimeout(l.opts.PublishTimeout) {
		l.log.Warn("metadata response not acknowledged", "device", deviceID, "id", resp.ID, "err", ErrPublish)
		return
	}
	if err := tok.Error(); err != nil {
		l.log.Warn("publishing metadata response", "device", deviceID, "id", resp.ID, "err", err)
	}
}
