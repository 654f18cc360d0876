package serve

import "bytes"

// fastRequest is an OIP v2 REST inference request head that the fast
// path answers itself. Its byte slices alias the parsed buffer.
type fastRequest struct {
	endpoint             fastEndpoint
	name, version, label []byte // path segments; version or label may be nil
	contentLength        int64
	headerLen            []byte // Inference-Header-Content-Length ("" when absent)
	timeout              []byte // Starling-Timeout
	routeKey             []byte // Starling-Route-Key
	close                bool   // Connection: close
	expectContinue       bool   // Expect: 100-continue
}

// fastEndpoint is what a fast request asks for.
type fastEndpoint int

const (
	epInfer      fastEndpoint = iota // POST /v2/models/{name}[/versions/{v}|/labels/{l}]/infer
	epLive                           // GET /v2/health/live
	epReady                          // GET /v2/health/ready
	epServerMeta                     // GET /v2
	epModelMeta                      // GET /v2/models/{name}[/versions/{v}|/labels/{l}]
	epModelReady                     // GET /v2/models/{name}[/versions/{v}|/labels/{l}]/ready
)

// fastVerdict says what parseFastRequest made of a buffer.
type fastVerdict int

const (
	// fastMore: the head is not complete yet and nothing so far rules the
	// fast path out; read more and parse again.
	fastMore fastVerdict = iota
	// fastFallback: the request is not one the fast path answers (another
	// endpoint or method, HTTP/1.0, chunked, an unusual or invalid
	// header, ...); net/http answers it instead.
	fastFallback
	// fastOK: the head is complete and the fast path answers it.
	fastOK
)

// parseFastRequest reads an HTTP/1.1 request head from b. It accepts only
// the narrow, common form of the inference request
//
//	POST /v2/models/{name}[/versions/{v}|/labels/{l}]/infer HTTP/1.1
//
// and of the read-only GETs clients make beside it (server live, ready
// and metadata; model metadata and ready), with CRLF line ends, a Host, a
// Content-Length of at most maxBody on the POST (none or 0 on a GET), no
// Transfer-Encoding, no duplicated header among those it reads, path
// segments of unreserved characters only and header values of printable
// ASCII; anything else is fastFallback, so that net/http, which
// implements the whole protocol, decides. On fastOK, n is the head's
// length (the body's first byte). The same head parses the same way from
// any buffer holding it; any prefix of it is fastMore. It never panics.
func parseFastRequest(b []byte, maxBody int64) (req fastRequest, n int, v fastVerdict) {
	line, rest, v := fastLine(b)
	if v != fastOK {
		return req, 0, v
	}
	const suffix = " HTTP/1.1"
	if !bytes.HasSuffix(line, []byte(suffix)) {
		return req, 0, fastFallback
	}
	line = line[:len(line)-len(suffix)]
	get := false
	switch {
	case bytes.HasPrefix(line, []byte("POST /v2/models/")):
		if !fastPath(line[len("POST /v2/models/"):], &req) || req.endpoint != epInfer {
			return req, 0, fastFallback
		}
	case bytes.HasPrefix(line, []byte("GET /v2/models/")):
		if !fastPath(line[len("GET /v2/models/"):], &req) || req.endpoint == epInfer {
			return req, 0, fastFallback
		}
		get = true
	case string(line) == "GET /v2":
		req.endpoint, get = epServerMeta, true
	case string(line) == "GET /v2/health/live":
		req.endpoint, get = epLive, true
	case string(line) == "GET /v2/health/ready":
		req.endpoint, get = epReady, true
	default:
		return req, 0, fastFallback
	}
	var seenLen, seenHost, seenConn, seenExpect, seenHL, seenTimeout, seenKey bool
	dup := func(seen *bool) bool {
		d := *seen
		*seen = true
		return d
	}
	for {
		line, rest, v = fastLine(rest)
		if v != fastOK {
			return req, 0, v
		}
		if len(line) == 0 {
			break
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return req, 0, fastFallback
		}
		name, value := line[:colon], trimOWS(line[colon+1:])
		for _, c := range name {
			if !isTokenChar(c) {
				return req, 0, fastFallback
			}
		}
		for _, c := range value {
			if (c < 0x20 && c != '\t') || c > 0x7e {
				return req, 0, fastFallback
			}
		}
		switch {
		case headerIs(name, "Content-Length"):
			if dup(&seenLen) {
				return req, 0, fastFallback
			}
			cl, ok := parseDigits(value)
			if !ok || cl > maxBody || (get && cl != 0) {
				return req, 0, fastFallback
			}
			req.contentLength = cl
		case headerIs(name, "Host"):
			if dup(&seenHost) {
				return req, 0, fastFallback
			}
			for _, c := range value {
				if !isHostChar(c) {
					return req, 0, fastFallback
				}
			}
		case headerIs(name, "Connection"):
			if dup(&seenConn) {
				return req, 0, fastFallback
			}
			switch {
			case headerIs(value, "close"):
				req.close = true
			case headerIs(value, "keep-alive"):
			default:
				return req, 0, fastFallback
			}
		case headerIs(name, "Expect"):
			if dup(&seenExpect) || get || !headerIs(value, "100-continue") {
				return req, 0, fastFallback
			}
			req.expectContinue = true
		case headerIs(name, headerInferLen):
			if dup(&seenHL) {
				return req, 0, fastFallback
			}
			req.headerLen = value
		case headerIs(name, HeaderTimeout):
			if dup(&seenTimeout) {
				return req, 0, fastFallback
			}
			req.timeout = value
		case headerIs(name, HeaderRouteKey):
			if dup(&seenKey) {
				return req, 0, fastFallback
			}
			req.routeKey = value
		case headerIs(name, "Transfer-Encoding"), headerIs(name, "Trailer"), headerIs(name, "Upgrade"):
			return req, 0, fastFallback
		}
	}
	if (!seenLen && !get) || !seenHost {
		return req, 0, fastFallback
	}
	return req, len(b) - len(rest), fastOK
}

// fastLine splits the first CRLF-terminated line off b. A bare CR or LF
// is fastFallback (net/http accepts bare LF; let it); no line end yet is
// fastMore.
func fastLine(b []byte) (line, rest []byte, v fastVerdict) {
	for i, c := range b {
		switch c {
		case '\n':
			return nil, nil, fastFallback
		case '\r':
			if i+1 == len(b) {
				return nil, nil, fastMore
			}
			if b[i+1] != '\n' {
				return nil, nil, fastFallback
			}
			return b[:i], b[i+2:], fastOK
		}
	}
	return nil, nil, fastMore
}

// fastPath matches the path after /v2/models/: {name}[/versions/{v}|
// /labels/{l}] followed by nothing (model metadata), /ready or /infer,
// each segment non-empty, of unreserved characters and neither "." nor
// "..". It sets req's endpoint and path values.
func fastPath(p []byte, req *fastRequest) bool {
	var segs [4][]byte
	n := 0
	for {
		i := bytes.IndexByte(p, '/')
		seg := p
		if i >= 0 {
			seg = p[:i]
		}
		if n == len(segs) || !fastSegment(seg) {
			return false
		}
		segs[n] = seg
		n++
		if i < 0 {
			break
		}
		p = p[i+1:]
	}
	req.name = segs[0]
	tail := segs[1:n]
	if len(tail) >= 2 {
		switch string(tail[0]) {
		case "versions":
			req.version = tail[1]
		case "labels":
			req.label = tail[1]
		default:
			return false
		}
		tail = tail[2:]
	}
	switch {
	case len(tail) == 0:
		req.endpoint = epModelMeta
	case string(tail[0]) == "ready":
		req.endpoint = epModelReady
	case string(tail[0]) == "infer":
		req.endpoint = epInfer
	default:
		return false
	}
	return true
}

func fastSegment(s []byte) bool {
	if len(s) == 0 || string(s) == "." || string(s) == ".." {
		return false
	}
	for _, c := range s {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}

// headerIs compares a header name or token with want, ASCII
// case-insensitively.
func headerIs(b []byte, want string) bool {
	if len(b) != len(want) {
		return false
	}
	for i := range len(b) {
		c, w := b[i], want[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if 'A' <= w && w <= 'Z' {
			w += 'a' - 'A'
		}
		if c != w {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// parseDigits reads a non-negative decimal of at most 18 digits.
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// isTokenChar reports whether c may appear in a header name (RFC 9110
// tchar).
func isTokenChar(c byte) bool {
	if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
		return true
	}
	switch c {
	case '!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~':
		return true
	}
	return false
}

// isHostChar is a conservative subset of what a Host header may hold.
func isHostChar(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']' || c == '_'
}
