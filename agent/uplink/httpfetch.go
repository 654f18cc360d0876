package uplink

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// ArtifactPath is where the control plane's device API serves artifacts
// by digest, with Range support; it needs the device's client certificate.
const ArtifactPath = "/api/v1/device/artifacts/"

// HTTPFetcher downloads artifacts from the control plane's device API with
// HTTP range requests (resuming at any offset), as the alternative to
// chunks over MQTT. It implements the reconciler's Fetcher.
type HTTPFetcher struct {
	// Base is the device API's URL, https://host:port. Required.
	Base string
	// Client carries the device's identity (enroll.Identity.HTTPClient);
	// default a client with a 30s header timeout and no identity.
	Client *http.Client
	// ChunkSize is the length handed to sink at a time; default 256 KiB.
	ChunkSize int
}

// Fetch downloads bytes [from, size) of the artifact with this digest and
// hands them to sink in order.
// IMPORTANT: sink must not keep data after it returns (the buffer is
// reused). A control plane that does not hold the
// artifact, or answers with other bytes than asked for, returns ErrRemote.
func (f *HTTPFetcher) Fetch(ctx context.Context, digest string, size, from int64, sink func(offset int64, data []byte) error) error {
	if from >= size {
		return nil
	}
	c := f.Client
	if c == nil {
		c = &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: 30 * time.Second}}
	}
	chunk := f.ChunkSize
	if chunk <= 0 {
		chunk = 256 << 10
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(f.Base, "/")+ArtifactPath+url.PathEscape(digest), nil)
	if err != nil {
		return fmt.Errorf("uplink.HTTPFetcher %s: %w", digest, err)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, size-1))
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("uplink.HTTPFetcher %s: %w", digest, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusPartialContent:
		want := fmt.Sprintf("bytes %d-%d/%d", from, size-1, size)
		if got := resp.Header.Get("Content-Range"); got != want {
			return fmt.Errorf("uplink.HTTPFetcher %s: answered range %q, asked for %q: %w", digest, got, want, ErrRemote)
		}
	case resp.StatusCode == http.StatusOK && from == 0:
		if resp.ContentLength >= 0 && resp.ContentLength != size {
			return fmt.Errorf("uplink.HTTPFetcher %s: %d bytes, want %d: %w", digest, resp.ContentLength, size, ErrRemote)
		}
	default:
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("uplink.HTTPFetcher %s@%d: control plane answered %s: %s: %w", digest, from, resp.Status, strings.TrimSpace(string(msg)), ErrRemote)
	}
	buf := make([]byte, chunk)
	off := from
	body := io.LimitReader(resp.Body, size-from)
	for off < size {
		n, err := io.ReadFull(body, buf[:min(int64(chunk), size-off)])
		if n > 0 {
			if serr := sink(off, buf[:n]); serr != nil {
				return fmt.Errorf("uplink.HTTPFetcher %s@%d: %w", digest, off, serr)
			}
			off += int64(n)
		}
		if err != nil {
			return fmt.Errorf("uplink.HTTPFetcher %s: body ended at %d of %d: %w", digest, off, size, err)
		}
	}
	return nil
}
