package serve

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// tfServing answers the TensorFlow Serving REST API for old clients:
//
//	POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict
//	GET  /v1/models/{name}[/versions/{v}|/labels/{l}]          (status)
//	GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata
//
// A predict body is {"instances": [...]} (row format: one entry per batch
// row, a value or an object of input name -> value) or {"inputs": ...}
// (columnar: a value, or an object of input name -> value); the answer is
// {"predictions": [...]} or {"outputs": ...} to match. Element types come
// from the model's signature.
func (s *Server) tfServing(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, "/v1/models/")
	verb := ""
	if i := strings.LastIndexByte(rest, ':'); i >= 0 {
		rest, verb = rest[:i], rest[i+1:]
	}
	meta := false
	if strings.HasSuffix(rest, "/metadata") && verb == "" {
		rest, meta = strings.TrimSuffix(rest, "/metadata"), true
	}
	parts := strings.Split(rest, "/")
	name, version, label := parts[0], "", ""
	switch {
	case len(parts) == 1:
	case len(parts) == 3 && parts[1] == "versions":
		version = parts[2]
	case len(parts) == 3 && parts[1] == "labels":
		label = parts[2]
	default:
		name = ""
	}
	if name == "" || (verb != "" && verb != "predict") {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint %s %s (TensorFlow Serving API: /v1/models/{name}[/versions/{v}|/labels/{l}][:predict|/metadata])", r.Method, r.URL.Path))
		return
	}
	caller := callerFrom(r.Context())
	if verb == "" {
		method(http.MethodGet, func(w http.ResponseWriter, r *http.Request) {
			m, err := s.lookup(caller, name, version, label)
			if err != nil {
				writeErr(w, err)
				return
			}
			defer m.Release()
			if meta {
				writeJSON(w, http.StatusOK, map[string]any{
					"model_spec": map[string]string{"name": m.Name, "version": m.Version},
					"metadata":   map[string]any{"signature_def": s.metaOf(m, true)},
				})
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"model_version_status": []any{map[string]any{
				"version": m.Version, "state": "AVAILABLE", "status": map[string]string{"error_code": "OK", "error_message": ""},
			}}})
		})(w, r)
		return
	}
	method(http.MethodPost, func(w http.ResponseWriter, r *http.Request) {
		s.tfPredict(w, r, caller, name, version, label)
	})(w, r)
}

type tfRequest struct {
	SignatureName string          `json:"signature_name"`
	Instances     json.RawMessage `json:"instances"`
	Inputs        json.RawMessage `json:"inputs"`
}

func (s *Server) tfPredict(w http.ResponseWriter, r *http.Request, caller Caller, name, version, label string) {
	buf := getBuf()
	defer putBuf(buf)
	if err := readBody(r, buf, s.opts.MaxBodyBytes); err != nil {
		writeErr(w, err)
		return
	}
	// The element types and input names come from the signature of the
	// version the request will reach; a concurrent swap can change it, in
	// which case binding fails with a clear 400, never a wrong answer.
	m, err := s.lookup(caller, name, version, label)
	if err != nil {
		writeErr(w, err)
		return
	}
	sig := m.Signature()
	m.Release()
	req, rows, err := parseTFRequest(*buf, sig.Inputs)
	if err != nil {
		writeErr(w, fmt.Errorf("model %s: %w", name, err))
		return
	}
	req.model, req.version, req.label = name, version, label
	resp, err := s.infer(r.Context(), req, caller, r.Header.Get(HeaderRouteKey))
	if err != nil {
		writeErr(w, err)
		return
	}
	out := getBuf()
	defer putBuf(out)
	b, err := appendTFResponse((*out)[:0], resp, rows)
	*out = b
	if err != nil {
		writeErr(w, fmt.Errorf("model %s:%s: %v: %w", resp.model, resp.version, err, ErrInternal))
		return
	}
	w.Header().Set(HeaderQueueUs, strconv.FormatInt(resp.queue.Microseconds(), 10))
	w.Header().Set(HeaderComputeUs, strconv.FormatInt(resp.compute.Microseconds(), 10))
	w.Header().Set(HeaderVersion, resp.version)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// parseTFRequest reads a TF-Serving predict body against the model's
// inputs. rows reports the row format ("instances"). Errors wrap
// ErrBadRequest; no input makes it panic.
func parseTFRequest(body []byte, specs []runtime.TensorSpec) (req *request, rows bool, err error) {
	var tr tfRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&tr); err != nil {
		return nil, false, fmt.Errorf("invalid JSON request: %v: %w", err, ErrBadRequest)
	}
	hasI, hasC := len(tr.Instances) > 0 && string(tr.Instances) != "null", len(tr.Inputs) > 0 && string(tr.Inputs) != "null"
	if hasI == hasC {
		return nil, false, fmt.Errorf(`request needs exactly one of "instances" (row format) or "inputs" (columnar format): %w`, ErrBadRequest)
	}
	values := map[string]any{} // input name -> nested value
	if hasC {
		v, err := decodeAny(tr.Inputs)
		if err != nil {
			return nil, false, err
		}
		if obj, ok := v.(map[string]any); ok {
			values = obj
		} else if len(specs) == 1 {
			values[specName(specs[0], 0)] = v
		} else {
			return nil, false, fmt.Errorf(`"inputs" must be an object of input name -> value for a model with %d inputs (%s): %w`, len(specs), describe(specs), ErrBadRequest)
		}
	} else {
		v, err := decodeAny(tr.Instances)
		if err != nil {
			return nil, false, err
		}
		list, ok := v.([]any)
		if !ok || len(list) == 0 {
			return nil, false, fmt.Errorf(`"instances" must be a non-empty list: %w`, ErrBadRequest)
		}
		cols := map[string][]any{}
		for i, inst := range list {
			obj, isObj := inst.(map[string]any)
			if !isObj {
				if len(specs) != 1 {
					return nil, false, fmt.Errorf("instances[%d] must be an object of input name -> value for a model with %d inputs: %w", i, len(specs), ErrBadRequest)
				}
				obj = map[string]any{specName(specs[0], 0): inst}
			}
			if i > 0 && len(obj) != len(cols) {
				return nil, false, fmt.Errorf("instances[%d] has %d inputs, instances[0] has %d: %w", i, len(obj), len(cols), ErrBadRequest)
			}
			for k, x := range obj {
				if i > 0 && cols[k] == nil {
					return nil, false, fmt.Errorf("instances[%d] has input %q that instances[0] lacks: %w", i, k, ErrBadRequest)
				}
				cols[k] = append(cols[k], x)
			}
		}
		for k, c := range cols {
			values[k] = c
		}
	}
	req = &request{}
	for name, v := range values {
		k := -1
		for i, sp := range specs {
			if specName(sp, i) == name {
				k = i
			}
		}
		if k < 0 {
			return nil, false, fmt.Errorf("unknown input %q; the model expects %s: %w", name, describe(specs), ErrBadRequest)
		}
		dt := specs[k].DType
		if !jsonSupported(dt) {
			return nil, false, fmt.Errorf("input %q: datatype %s cannot be sent as JSON: %w", name, dt, ErrBadRequest)
		}
		var shape []int64
		var leaves []any
		if shape, leaves, err = nested(v); err != nil {
			return nil, false, fmt.Errorf("input %q: %v: %w", name, err, ErrBadRequest)
		}
		size := dt.Size()
		data := make([]byte, len(leaves)*size)
		for i, l := range leaves {
			var tok []byte
			switch x := l.(type) {
			case json.Number:
				tok = []byte(x)
			case bool:
				tok = strconv.AppendBool(nil, x)
			default:
				return nil, false, fmt.Errorf("input %q: element %d is %T; only numbers and booleans are supported: %w", name, i, l, ErrBadRequest)
			}
			if err := putElem(data[i*size:], dt, tok, int64(i)); err != nil {
				return nil, false, fmt.Errorf("input %q: %v: %w", name, err, ErrBadRequest)
			}
		}
		req.inputs = append(req.inputs, reqInput{name: name, dtype: dt, shape: shape, data: data})
	}
	return req, hasI, nil
}

func decodeAny(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v: %w", err, ErrBadRequest)
	}
	return v, nil
}

// nested returns the shape of a rectangular nested list (read off its
// first elements) and its leaves in row-major order.
func nested(v any) ([]int64, []any, error) {
	var shape []int64
	for x := v; ; {
		list, ok := x.([]any)
		if !ok {
			break
		}
		if len(shape) == maxDims {
			return nil, nil, fmt.Errorf("nested more than %d deep", maxDims)
		}
		shape = append(shape, int64(len(list)))
		if len(list) == 0 {
			break
		}
		x = list[0]
	}
	var leaves []any
	var walk func(x any, d int) error
	walk = func(x any, d int) error {
		list, ok := x.([]any)
		if d == len(shape) {
			if ok {
				return fmt.Errorf("ragged: a list at depth %d where its siblings hold values", d)
			}
			leaves = append(leaves, x)
			return nil
		}
		if !ok || int64(len(list)) != shape[d] {
			return fmt.Errorf("ragged: at depth %d expected a list of %d entries, like the first one", d, shape[d])
		}
		for _, e := range list {
			if err := walk(e, d+1); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(v, 0); err != nil {
		return nil, nil, err
	}
	return shape, leaves, nil
}

// appendTFResponse writes {"predictions": [...]} (rows) or {"outputs": ...}.
func appendTFResponse(b []byte, resp *response, rows bool) ([]byte, error) {
	var err error
	if !rows {
		b = append(b, `{"outputs":`...)
		if len(resp.outputs) == 1 {
			if b, err = appendNested(b, &resp.outputs[0].t); err != nil {
				return b, err
			}
			return append(b, '}'), nil
		}
		b = append(b, '{')
		for i, o := range resp.outputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendQuote(b, o.t.Name)
			b = append(b, ':')
			if b, err = appendNested(b, &o.t); err != nil {
				return b, err
			}
		}
		return append(b, "}}"...), nil
	}
	b = append(b, `{"predictions":[`...)
	n := int64(-1)
	for _, o := range resp.outputs {
		if len(o.t.Shape) == 0 || (n >= 0 && o.t.Shape[0] != n) {
			return b, fmt.Errorf("outputs disagree on the batch dimension; ask in the columnar format (\"inputs\")")
		}
		n = o.t.Shape[0]
	}
	for r := int64(0); r < n; r++ {
		if r > 0 {
			b = append(b, ',')
		}
		if len(resp.outputs) > 1 {
			b = append(b, '{')
		}
		for i, o := range resp.outputs {
			if i > 0 {
				b = append(b, ',')
			}
			if len(resp.outputs) > 1 {
				b = strconv.AppendQuote(b, o.t.Name)
				b = append(b, ':')
			}
			rb := int64(len(o.t.Data)) / n
			row := tensor.Tensor{Name: o.t.Name, DType: o.t.DType, Shape: o.t.Shape[1:], Data: o.t.Data[r*rb : (r+1)*rb]}
			if b, err = appendNested(b, &row); err != nil {
				return b, err
			}
		}
		if len(resp.outputs) > 1 {
			b = append(b, '}')
		}
	}
	return append(b, "]}"...), nil
}

// appendNested writes t as nested JSON lists following its shape.
func appendNested(b []byte, t *tensor.Tensor) ([]byte, error) {
	if !jsonSupported(t.DType) {
		return b, fmt.Errorf("output %q: datatype %s cannot be sent as JSON", t.Name, t.DType)
	}
	size := t.DType.Size()
	n := len(t.Data) / size
	if int64(n) != tensor.NumElements(t.Shape) {
		return b, fmt.Errorf("output %q: %d elements for shape %v", t.Name, n, t.Shape)
	}
	i := 0
	var rec func(d int)
	rec = func(d int) {
		if d == len(t.Shape) {
			b = appendElem(b, t, i)
			i++
			return
		}
		b = append(b, '[')
		for k := int64(0); k < t.Shape[d]; k++ {
			if k > 0 {
				b = append(b, ',')
			}
			rec(d + 1)
		}
		b = append(b, ']')
	}
	rec(0)
	return b, nil
}

func appendElem(b []byte, t *tensor.Tensor, i int) []byte {
	d := t.Data
	switch t.DType {
	case tensor.Fp32:
		return appendFloat(b, float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))), 32)
	case tensor.Fp64:
		return appendFloat(b, math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])), 64)
	case tensor.Bool:
		return strconv.AppendBool(b, d[i] != 0)
	case tensor.Uint8:
		return strconv.AppendInt(b, int64(d[i]), 10)
	case tensor.Int8:
		return strconv.AppendInt(b, int64(int8(d[i])), 10)
	case tensor.Int16:
		return strconv.AppendInt(b, int64(int16(binary.LittleEndian.Uint16(d[2*i:]))), 10)
	case tensor.Int32:
		return strconv.AppendInt(b, int64(int32(binary.LittleEndian.Uint32(d[4*i:]))), 10)
	}
	return strconv.AppendInt(b, int64(binary.LittleEndian.Uint64(d[8*i:])), 10)
}
