package serve

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// The fast path answers the hot request, POST .../infer (JSON or the
// binary tensor data extension), on the REST listeners without net/http:
// one goroutine per connection reads request heads with a fixed parser
// (parseFastRequest) into per-connection buffers and writes each answer
// with one write. Everything else, and anything unusual about an infer
// request, goes to net/http: the connection, with the bytes already read
// and not yet answered, is handed to the http.Server for the rest of its
// life, so every other endpoint, status, header and error behaves exactly
// as before. Answers of both paths come from the same code (inferREST,
// writeError's encoding), so they are identical but for the Date header.
//
// Differences a client can observe: none in answers; the fast path does
// not notice a client that disconnects while its request waits in a
// queue (net/http cancels such a request; the fast path runs it and
// discards the answer). Deadlines from Starling-Timeout, the parameter
// "timeout" and ModelOptions.Timeout apply the same.

// fastBufSize is a connection's read buffer; a request head must fit in
// it to take the fast path (larger heads go to net/http).
const fastBufSize = 8 << 10

// fastHeadTimeout bounds reading a request head once it has begun, as
// http.Server.ReadHeaderTimeout does on the net/http path.
const fastHeadTimeout = 10 * time.Second

// fastServer owns the fast path's connections and the queue that hands
// connections to net/http.
type fastServer struct {
	s       *Server
	handoff *connQueue

	mu        sync.Mutex
	closing   atomic.Bool
	listeners map[net.Listener]struct{}
	conns     map[*fastConn]struct{}
	wg        sync.WaitGroup // connection goroutines
}

func newFastServer(s *Server, addr net.Addr) *fastServer {
	return &fastServer{
		s:         s,
		handoff:   &connQueue{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})},
		listeners: map[net.Listener]struct{}{},
		conns:     map[*fastConn]struct{}{},
	}
}

// serve accepts connections on l until shutdown; it returns
// http.ErrServerClosed then, like http.Server.Serve.
func (fs *fastServer) serve(l net.Listener) error {
	fs.mu.Lock()
	if fs.closing.Load() {
		fs.mu.Unlock()
		return http.ErrServerClosed
	}
	fs.listeners[l] = struct{}{}
	fs.mu.Unlock()
	var delay time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if fs.closing.Load() {
				return http.ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors and the like: back off as
			// net/http does, and keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			fs.s.log.Warn("accept failed; retrying", "addr", l.Addr(), "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		fc := &fastConn{fs: fs, c: c}
		fs.mu.Lock()
		if fs.closing.Load() {
			fs.mu.Unlock()
			c.Close()
			return http.ErrServerClosed
		}
		fs.conns[fc] = struct{}{}
		fs.wg.Add(1)
		fs.mu.Unlock()
		go fc.serve()
	}
}

// shutdown stops accepting, closes idle connections, lets requests in
// flight finish (each connection closes after its answer) and, when ctx
// ends first, closes the rest.
func (fs *fastServer) shutdown(ctx context.Context) {
	fs.mu.Lock()
	fs.closing.Store(true)
	for l := range fs.listeners {
		l.Close()
	}
	for fc := range fs.conns {
		if fc.idle.Load() {
			fc.c.SetReadDeadline(time.Unix(1, 0)) // wakes the read; the loop sees closing
		}
	}
	fs.mu.Unlock()
	done := make(chan struct{})
	go func() { fs.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		fs.mu.Lock()
		for fc := range fs.conns {
			fc.c.Close()
		}
		fs.mu.Unlock()
		<-done
	}
}

// fastConn is one REST connection on the fast path.
type fastConn struct {
	fs   *fastServer
	c    net.Conn
	br   *bufio.Reader
	idle atomic.Bool // waiting for a request's first byte

	head []byte // the current request head, copied out of br
	wbuf []byte // the answer's head (and small bodies)
}

func (fc *fastConn) forget() {
	fc.fs.mu.Lock()
	delete(fc.fs.conns, fc)
	fc.fs.mu.Unlock()
	fc.fs.wg.Done()
}

func (fc *fastConn) serve() {
	handedOff := false
	defer func() {
		if !handedOff {
			fc.c.Close()
		}
		fc.forget()
	}()
	fc.br = bufio.NewReaderSize(fc.c, fastBufSize)
	caller := callerOf(fc.c.RemoteAddr())
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), callerKey{}, caller))
	defer cancel()
	maxBody := fc.fs.s.opts.MaxBodyBytes
	for {
		fc.idle.Store(true)
		if fc.fs.closing.Load() {
			return
		}
		if _, err := fc.br.Peek(1); err != nil {
			return
		}
		fc.idle.Store(false)
		req, n, v := parseFastRequest(fc.buffered(), maxBody)
		deadline := false
		for v == fastMore {
			if fc.br.Buffered() == fc.br.Size() {
				v = fastFallback // a head this long is net/http's
				break
			}
			if !deadline {
				fc.c.SetReadDeadline(time.Now().Add(fastHeadTimeout))
				deadline = true
			}
			if _, err := fc.br.Peek(fc.br.Buffered() + 1); err != nil {
				return
			}
			req, n, v = parseFastRequest(fc.buffered(), maxBody)
		}
		if deadline {
			fc.c.SetReadDeadline(time.Time{})
		}
		if v == fastFallback {
			// net/http sets its own read deadlines from here on; put
			// closes the connection if net/http has stopped.
			fc.fs.handoff.put(&handoffConn{Conn: fc.c, r: fc.br})
			handedOff = true
			return
		}
		// Keep the head: reading the body reuses br's buffer.
		fc.head = append(fc.head[:0], fc.buffered()[:n]...)
		req, _, _ = parseFastRequest(fc.head, maxBody)
		if req.endpoint != epInfer {
			handled, keep := fc.answerGet(ctx, &req)
			if !handled {
				fc.fs.handoff.put(&handoffConn{Conn: fc.c, r: fc.br})
				handedOff = true
				return
			}
			fc.br.Discard(n)
			if !keep {
				return
			}
			continue
		}
		fc.br.Discard(n)
		if !fc.answer(ctx, caller, &req) {
			return
		}
	}
}

func (fc *fastConn) buffered() []byte {
	b, _ := fc.br.Peek(fc.br.Buffered())
	return b
}

// answer reads req's body, runs it and writes the answer. It reports
// whether the connection stays open.
func (fc *fastConn) answer(ctx context.Context, caller Caller, req *fastRequest) bool {
	if req.expectContinue {
		if _, err := fc.c.Write([]byte("HTTP/1.1 100 Continue\r\n\r\n")); err != nil {
			return false
		}
	}
	body := getBuf()
	defer putBuf(body)
	if int64(cap(*body)) < req.contentLength {
		*body = make([]byte, 0, req.contentLength)
	}
	b := (*body)[:req.contentLength]
	*body = b
	if _, err := io.ReadFull(fc.br, b); err != nil {
		// As readBody's answer on the net/http path; the connection
		// cannot carry another request.
		fc.fs.s.fastAnswered.Add(1)
		fc.writeError(fmt.Errorf("reading request body: %v: %w", err, ErrBadRequest), true)
		return false
	}
	call := inferCall{
		name: bstr(req.name), version: bstr(req.version), label: bstr(req.label),
		headerLen: bstr(req.headerLen), timeout: bstr(req.timeout), routeKey: bstr(req.routeKey),
	}
	out := getBuf()
	defer putBuf(out)
	resp, jsonLen, err := fc.fs.s.inferREST(ctx, caller, &call, b, out)
	fc.fs.s.fastAnswered.Add(1)
	if err != nil {
		return fc.writeError(err, req.close)
	}
	w := append(fc.wbuf[:0], "HTTP/1.1 200 OK\r\nContent-Length: "...)
	w = strconv.AppendInt(w, int64(len(*out)), 10)
	if jsonLen < len(*out) {
		w = append(w, "\r\nContent-Type: application/octet-stream\r\n"...)
	} else {
		w = append(w, "\r\nContent-Type: application/json\r\n"...)
	}
	w = appendDate(w)
	if jsonLen < len(*out) {
		w = append(w, headerInferLen+": "...)
		w = strconv.AppendInt(w, int64(jsonLen), 10)
		w = append(w, "\r\n"...)
	}
	w = append(w, HeaderComputeUs+": "...)
	w = strconv.AppendInt(w, resp.compute.Microseconds(), 10)
	w = append(w, "\r\n"+HeaderVersion+": "...)
	w = appendHeaderValue(w, resp.version)
	w = append(w, "\r\n"+HeaderQueueUs+": "...)
	w = strconv.AppendInt(w, resp.queue.Microseconds(), 10)
	w = append(w, "\r\n"...)
	if req.close {
		w = append(w, "Connection: close\r\n"...)
	}
	w = append(w, "\r\n"...)
	err = fc.write(w, *out)
	return err == nil && !req.close
}

// answerGet answers a read-only GET (health, metadata, readiness) with
// the net/http path's own handlers. handled is false, and nothing is
// written, when the answer is one net/http would send chunked (2 KB or
// more): the caller hands the request over instead, which is safe as
// these requests change nothing. keep reports whether the connection
// stays open.
func (fc *fastConn) answerGet(ctx context.Context, req *fastRequest) (handled, keep bool) {
	s := fc.fs.s
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, "/", nil)
	if err != nil {
		return false, false
	}
	r.SetPathValue("name", bstr(req.name))
	r.SetPathValue("version", bstr(req.version))
	r.SetPathValue("label", bstr(req.label))
	rec := &fastRecorder{h: http.Header{}}
	switch req.endpoint {
	case epLive:
		s.live(rec, r)
	case epReady:
		s.ready(rec, r)
	case epServerMeta:
		s.serverMeta(rec, r)
	case epModelMeta:
		s.metadata(rec, r)
	case epModelReady:
		s.modelReady(rec, r)
	default:
		return false, false
	}
	if len(rec.body) >= 2048 || rec.code == 0 {
		return false, false
	}
	w := append(fc.wbuf[:0], "HTTP/1.1 "...)
	w = strconv.AppendInt(w, int64(rec.code), 10)
	w = append(w, ' ')
	w = append(w, http.StatusText(rec.code)...)
	w = append(w, "\r\nContent-Length: "...)
	w = strconv.AppendInt(w, int64(len(rec.body)), 10)
	w = append(w, "\r\n"...)
	for _, k := range slices.Sorted(maps.Keys(rec.h)) {
		for _, v := range rec.h[k] {
			w = append(w, k...)
			w = append(w, ": "...)
			w = appendHeaderValue(w, v)
			w = append(w, "\r\n"...)
		}
	}
	w = appendDate(w)
	if req.close {
		w = append(w, "Connection: close\r\n"...)
	}
	w = append(w, "\r\n"...)
	s.fastAnswered.Add(1)
	return true, fc.write(w, rec.body) == nil && !req.close
}

// fastRecorder keeps what a handler answers for answerGet.
type fastRecorder struct {
	h    http.Header
	code int
	body []byte
}

func (r *fastRecorder) Header() http.Header { return r.h }

func (r *fastRecorder) WriteHeader(code int) {
	if r.code == 0 {
		r.code = code
	}
}

func (r *fastRecorder) Write(b []byte) (int, error) {
	if r.code == 0 {
		r.code = http.StatusOK
	}
	r.body = append(r.body, b...)
	return len(b), nil
}

// write sends an answer's head and body, in one write when the body is
// small.
func (fc *fastConn) write(head, body []byte) error {
	if len(body) <= 64<<10 {
		head = append(head, body...)
		fc.wbuf = head
		_, err := fc.c.Write(head)
		return err
	}
	fc.wbuf = head
	if _, err := fc.c.Write(head); err != nil {
		return err
	}
	_, err := fc.c.Write(body)
	return err
}

// writeError answers err as writeErr does on the net/http path (status,
// JSON body, Retry-After for a full queue). It reports whether the
// connection stays open.
func (fc *fastConn) writeError(err error, closeConn bool) bool {
	code, _ := statusOf(err)
	body, merr := json.Marshal(map[string]string{"error": err.Error()})
	if merr != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error":"encoding response failed"}`)
	}
	body = append(body, '\n')
	w := append(fc.wbuf[:0], "HTTP/1.1 "...)
	w = strconv.AppendInt(w, int64(code), 10)
	w = append(w, ' ')
	w = append(w, http.StatusText(code)...)
	w = append(w, "\r\nContent-Length: "...)
	w = strconv.AppendInt(w, int64(len(body)), 10)
	w = append(w, "\r\nContent-Type: application/json\r\n"...)
	w = appendDate(w)
	var re *retryError
	if errors.As(err, &re) {
		w = append(w, "Retry-After: "...)
		w = strconv.AppendInt(w, int64(retryAfterSeconds(re.after)), 10)
		w = append(w, "\r\nStarling-Retry-After-Ms: "...)
		w = strconv.AppendInt(w, max(re.after.Milliseconds(), 1), 10)
		w = append(w, "\r\n"...)
	}
	if closeConn {
		w = append(w, "Connection: close\r\n"...)
	}
	w = append(w, "\r\n"...)
	return fc.write(w, body) == nil && !closeConn
}

// appendHeaderValue writes v as a header value, with CR and LF turned to
// spaces as net/http's Header.Write does.
func appendHeaderValue(w []byte, v string) []byte {
	for i := range len(v) {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		w = append(w, c)
	}
	return w
}

// dateCache holds the Date header line of the current second.
var dateCache atomic.Pointer[dateLine]

type dateLine struct {
	sec  int64
	line []byte
}

// appendDate writes "Date: ...\r\n" for now, formatting once a second.
func appendDate(w []byte) []byte {
	now := time.Now()
	d := dateCache.Load()
	if d == nil || d.sec != now.Unix() {
		d = &dateLine{sec: now.Unix(), line: []byte("Date: " + now.UTC().Format(http.TimeFormat) + "\r\n")}
		dateCache.Store(d)
	}
	return append(w, d.line...)
}

// bstr views b as a string without copying. IMPORTANT: the string is
// valid only while b's bytes are unchanged; the fast path's head buffer
// is stable until the answer is written, and nothing keeps these strings
// past the request (errors and metrics copy them).
func bstr(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// handoffConn is a connection handed to net/http, reading first what the
// fast path had buffered.
type handoffConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *handoffConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connQueue is the listener net/http serves the handed-off connections
// from.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

var _ net.Listener = (*connQueue)(nil)

// put hands c to net/http, or closes it when net/http has stopped.
func (q *connQueue) put(c net.Conn) {
	select {
	case q.ch <- c:
	case <-q.done:
		c.Close()
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }
