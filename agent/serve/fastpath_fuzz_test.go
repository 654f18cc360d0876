package serve

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
)

// fuzzMux routes like Handler's mux, recording the path values and the
// method check of the route a request lands on.
func fuzzMux() (*http.ServeMux, *fuzzRoute) {
	got := &fuzzRoute{}
	mux := http.NewServeMux()
	rec := func(ep fastEndpoint, method string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			*got = fuzzRoute{ok: r.Method == method, ep: ep, name: r.PathValue("name"), version: r.PathValue("version"), label: r.PathValue("label")}
		}
	}
	mux.HandleFunc("/v2/health/live", rec(epLive, "GET"))
	mux.HandleFunc("/v2/health/ready", rec(epReady, "GET"))
	mux.HandleFunc("/v2", rec(epServerMeta, "GET"))
	for _, sel := range []string{"", "/versions/{version}", "/labels/{label}"} {
		mux.HandleFunc("/v2/models/{name}"+sel, rec(epModelMeta, "GET"))
		mux.HandleFunc("/v2/models/{name}"+sel+"/ready", rec(epModelReady, "GET"))
		mux.HandleFunc("/v2/models/{name}"+sel+"/infer", rec(epInfer, "POST"))
	}
	mux.HandleFunc("/v1/models/", func(http.ResponseWriter, *http.Request) { *got = fuzzRoute{} })
	mux.HandleFunc("/", func(http.ResponseWriter, *http.Request) { *got = fuzzRoute{} })
	return mux, got
}

type fuzzRoute struct {
	ok                   bool
	ep                   fastEndpoint
	name, version, label string
}

// FuzzFastPathRequest checks the fast path's request head parser against
// net/http on arbitrary input: whatever the fast path accepts, net/http
// reads as the same request (method, route and path values, body length,
// the headers the API reads, Connection: close) and with a head of the
// same length; a head the fast path waits on has no end yet; every
// prefix of an accepted head waits for more; nothing panics.
func FuzzFastPathRequest(f *testing.F) {
	for _, s := range []string{
		"POST /v2/models/demo/infer HTTP/1.1\r\nHost: agent\r\nContent-Length: 2\r\n\r\n{}",
		"POST /v2/models/demo/versions/3/infer HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: Python-urllib/3.11\r\nInference-Header-Content-Length: 10\r\nContent-Length: 42\r\nConnection: keep-alive\r\n\r\n",
		"POST /v2/models/m/labels/canary/infer HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nstarling-timeout: 250ms\r\nStarling-Route-Key: cam\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
		"GET /v2/health/ready HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n",
		"GET /v2 HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
		"GET /v2/models/demo/versions/1/ready HTTP/1.1\r\nHost: [::1]:80\r\n\r\n",
		"GET /v2/models/versions/versions/ready HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /v2/models/demo/infer HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"POST /v2/models/demo/infer HTTP/1.1\nHost: a\nContent-Length: 0\n\n",
		"POST /v2/models/./infer HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
		"POST /v2/models/demo/infer HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n Content-Length: 2\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	const maxBody = 1 << 20
	mux, got := fuzzMux()
	f.Fuzz(func(t *testing.T, b []byte) {
		req, n, v := parseFastRequest(b, maxBody)
		switch v {
		case fastMore:
			if bytes.Contains(b, []byte("\r\n\r\n")) {
				t.Fatalf("waits for more on a buffer holding a complete head: %q", b)
			}
			return
		case fastFallback:
			return
		}
		if n <= 0 || n > len(b) || !bytes.HasSuffix(b[:n], []byte("\r\n\r\n")) {
			t.Fatalf("head length %d of %q", n, b)
		}
		again, n2, v2 := parseFastRequest(b[:n], maxBody)
		if v2 != fastOK || n2 != n || string(again.name) != string(req.name) || again.contentLength != req.contentLength {
			t.Fatalf("the head alone parses differently: %v %d", v2, n2)
		}
		for _, k := range []int{0, n / 3, n / 2, n - 1} {
			if _, _, v := parseFastRequest(b[:k], maxBody); v != fastMore {
				t.Fatalf("prefix %q of an accepted head: verdict %v, want fastMore", b[:k], v)
			}
		}
		br := bufio.NewReader(bytes.NewReader(b))
		r, err := http.ReadRequest(br)
		if err != nil {
			t.Fatalf("fast path accepts what net/http refuses (%v): %q", err, b)
		}
		if consumed := len(b) - br.Buffered(); r.ContentLength > 0 && consumed > n+int(r.ContentLength) {
			t.Fatalf("net/http read %d bytes of head, the fast path %d", consumed, n)
		}
		body, _ := io.ReadAll(r.Body)
		if want := b[n:min(len(b), n+int(req.contentLength))]; !bytes.Equal(body, want) {
			t.Fatalf("body: net/http %q, fast path %q", body, want)
		}
		if r.ContentLength != req.contentLength || r.Close != req.close || r.ProtoMinor != 1 {
			t.Fatalf("net/http: length %d close %v proto %s; fast path: length %d close %v", r.ContentLength, r.Close, r.Proto, req.contentLength, req.close)
		}
		for h, fast := range map[string][]byte{headerInferLen: req.headerLen, HeaderTimeout: req.timeout, HeaderRouteKey: req.routeKey} {
			if r.Header.Get(h) != string(fast) {
				t.Fatalf("%s: net/http %q, fast path %q", h, r.Header.Get(h), fast)
			}
		}
		if ex := r.Header.Get("Expect"); (ex != "") != req.expectContinue {
			t.Fatalf("Expect %q, fast path %v", ex, req.expectContinue)
		}
		*got = fuzzRoute{}
		mux.ServeHTTP(discardWriter{}, r)
		want := fuzzRoute{ok: true, ep: req.endpoint, name: string(req.name), version: string(req.version), label: string(req.label)}
		if *got != want {
			t.Fatalf("route: net/http %+v, fast path %+v (%q)", *got, want, b[:n])
		}
		if r.Method != "GET" && r.Method != "POST" || r.URL.RawQuery != "" || strconv.Quote(r.URL.Path) != strconv.Quote(r.URL.EscapedPath()) {
			t.Fatalf("method %q, URL %v", r.Method, r.URL)
		}
	})
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}
