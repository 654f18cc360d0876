package uplink

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestHTTPFetcher downloads over real net/http range handling (the
// control plane serves artifacts with http.ServeContent).
func TestHTTPFetcher(t *testing.T) {
	artifact := bytes.Repeat([]byte("0123456789abcdef"), 4096+3)
	const digest = "sha256:aa"
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != ArtifactPath+"sha256:aa" {
			http.Error(w, `{"error":"no artifact"}`, http.StatusNotFound)
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(artifact))
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name   string
		digest string
		size   int64
		from   int64
		want   error
		msg    string
	}{
		{"whole", digest, int64(len(artifact)), 0, nil, ""},
		{"resume", digest, int64(len(artifact)), 12345, nil, ""},
		{"nothing left", digest, int64(len(artifact)), int64(len(artifact)), nil, ""},
		{"unknown artifact", "sha256:bb", 10, 0, ErrRemote, "404"},
		{"size disagrees", digest, int64(len(artifact)) + 7, 100, ErrRemote, "range"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &HTTPFetcher{Base: srv.URL + "/", Client: srv.Client(), ChunkSize: 1000}
			got := make([]byte, tc.from, tc.size)
			err := f.Fetch(context.Background(), tc.digest, tc.size, tc.from, func(off int64, data []byte) error {
				if off != int64(len(got)) || len(data) > 1000 {
					t.Fatalf("chunk at %d (%d bytes), want offset %d", off, len(data), len(got))
				}
				got = append(got, data...)
				return nil
			})
			if tc.want != nil {
				if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("got %v, want %v mentioning %q", err, tc.want, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got[tc.from:], artifact[tc.from:tc.size]) {
				t.Fatalf("bytes %d.. differ", tc.from)
			}
		})
	}
}
