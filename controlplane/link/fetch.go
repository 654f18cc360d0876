package link

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/starling-edge/starling/controlplane/store"
	"github.com/starling-edge/starling/shared/wire"
)

// maxFetchRequest bounds a fetch request body; a real one is ~200 bytes.
const maxFetchRequest = 4 << 10

// enqueueFetch hands a fetch request to the worker pool without blocking
// the delivery goroutine. A full queue drops the request: the agent times
// out and asks again, which is cheaper than stalling every other device.
func (l *Link) enqueueFetch(id string, payload []byte) error {
	if len(payload) > maxFetchRequest {
		return fmt.Errorf("fetch request is %d bytes, limit %d", len(payload), maxFetchRequest)
	}
	var req wire.FetchRequest
	if err := json.Unmarshal(payload, &req); err != nil {
		return fmt.Errorf("fetch request is not valid JSON: %w", err)
	}
	if len(req.ID) > 256 {
		return fmt.Errorf("fetch request id is %d bytes, limit 256", len(req.ID))
	}
	select {
	case <-l.ctx.Done():
		return ErrClosed
	case l.fetchQ <- fetchJob{deviceID: id, req: req}:
		return nil
	default:
		return fmt.Errorf("fetch queue full (%d waiting): request %q dropped", cap(l.fetchQ), req.ID)
	}
}

func (l *Link) fetchWorker() {
	buf := make([]byte, wire.MaxChunk)
	for {
		select {
		case <-l.ctx.Done():
			return
		case job := <-l.fetchQ:
			if job.meta != nil {
				l.answerMetadata(job)
				continue
			}
			l.answerFetch(job, buf)
		}
	}
}

func (l *Link) answerFetch(job fetchJob, buf []byte) {
	if hook := l.opts.FetchHook; hook != nil && !hook(job.deviceID, job.req) {
		return
	}
	hdr, data := l.readChunk(job.req, buf)
	msg, err := wire.EncodeChunk(hdr, data)
	if err != nil {
		l.log.Error("encoding fetch response", "device", job.deviceID, "err", err)
		return
	}
	tok := l.client.Publish(wire.DeviceTopic(job.deviceID, wire.FetchResp), 1, false, msg)
	if !tok.WaitTimeout(l.opts.PublishTimeout) {
		l.log.Warn("fetch response not acknowledged", "device", job.deviceID, "id", job.req.ID, "err", ErrPublish)
		return
	}
	if err := tok.Error(); err != nil {
		l.log.Warn("publishing fetch response", "device", job.deviceID, "id", job.req.ID, "err", err)
	}
}

// readChunk returns the header and bytes that answer req; on failure the
// header carries the error and there are no bytes.
func (l *Link) readChunk(req wire.FetchRequest, buf []byte) (wire.ChunkHeader, []byte) {
	hdr := wire.ChunkHeader{ID: req.ID, Digest: req.Digest, Offset: req.Offset}
	f, size, err := l.opts.Artifacts.Open(req.Digest)
	switch {
	case errors.Is(err, store.ErrNotFound):
		hdr.Error = fmt.Sprintf("unknown artifact %s", req.Digest)
		return hdr, nil
	case errors.Is(err, store.ErrInvalid):
		hdr.Error = fmt.Sprintf("malformed digest %q: want sha256:<64 lowercase hex>", req.Digest)
		return hdr, nil
	case err != nil:
		l.log.Error("opening artifact for fetch", "digest", req.Digest, "err", err)
		hdr.Error = fmt.Sprintf("artifact %s unavailable", req.Digest)
		return hdr, nil
	}
	defer f.Close()
	hdr.Total = size
	if req.Offset < 0 || req.Length < 0 || req.Offset > size {
		hdr.Error = fmt.Sprintf("bad range: offset %d length %d for an artifact of %d bytes", req.Offset, req.Length, size)
		return hdr, nil
	}
	n := min(req.Length, int64(wire.MaxChunk), size-req.Offset)
	got, err := f.ReadAt(buf[:n], req.Offset)
	if err != nil && !(errors.Is(err, io.EOF) && int64(got) == n) {
		l.log.Error("reading artifact for fetch", "digest", req.Digest, "err", err)
		hdr.Error = fmt.Sprintf("artifact %s unreadable", req.Digest)
		return hdr, nil
	}
	return hdr, buf[:n]
}
