package serve

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/shared/tensor"
)

// response is one answered inference.
type response struct {
	model, version, id string
	outputs            []respOutput
	queue, compute     time.Duration
	batch              int
}

type respOutput struct {
	t      tensor.Tensor
	binary bool
}

// infer runs req for caller: access check, routing, input binding,
// deadline, the executor (queue, batching) and the shadow copy. Every
// error wraps one of the package's sentinels.
func (s *Server) infer(ctx context.Context, req *request, caller Caller, key string) (*response, error) {
	reg := s.opts.Registry
	o := reg.options(req.model)
	if err := checkAllowed(req.model, o.Allow, caller); err != nil {
		return nil, err
	}
	m, shadow, err := reg.route(req.model, req.version, req.label, key)
	if err != nil {
		return nil, err
	}
	defer m.Release()
	resp, inputs, err := s.runOn(ctx, m, req, o)
	if err != nil {
		reg.metrics.fail(m.Name, m.Version, err)
		if shadow != nil {
			shadow.Release()
		}
		return nil, err
	}
	m.exec.m.ok.Inc()
	if shadow != nil {
		// The copy must not alias buffers the caller reuses (the request
		// body) once this request is answered.
		cp := make([]tensor.Tensor, len(inputs))
		for i, in := range inputs {
			cp[i] = tensor.Tensor{Name: in.Name, DType: in.DType, Shape: slices.Clone(in.Shape), Data: slices.Clone(in.Data)}
		}
		var first tensor.Tensor
		if len(resp.outputs) > 0 {
			first = resp.outputs[0].t
		}
		reg.shadow.submit(shadowJob{name: m.Name, live: m.Version, s: shadow, inputs: cp, out: first})
	}
	return resp, nil
}

func (s *Server) runOn(ctx context.Context, m *Served, req *request, o ModelOptions) (*response, []tensor.Tensor, error) {
	sig := m.Signature()
	inputs, err := bindInputs(req.inputs, sig.Inputs)
	if err != nil {
		return nil, nil, fmt.Errorf("model %s:%s: %w", m.Name, m.Version, err)
	}
	for _, ro := range req.outputs {
		if !hasSpec(sig.Outputs, ro.name) {
			return nil, nil, fmt.Errorf("model %s:%s has no output %q; it has %s: %w", m.Name, m.Version, ro.name, describe(sig.Outputs), ErrBadRequest)
		}
	}
	timeout := req.timeout
	if timeout == 0 {
		timeout = o.Timeout
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	res, err := m.exec.run(ctx, inputs)
	if err != nil {
		return nil, nil, err
	}
	resp := &response{model: m.Name, version: m.Version, id: req.id, queue: res.queue, compute: res.compute, batch: res.batch}
	resp.outputs = make([]respOutput, 0, len(res.outs))
	for i := range res.outs {
		t := res.outs[i]
		if t.Name == "" && i < len(sig.Outputs) {
			t.Name = specName(sig.Outputs[i], i)
		}
		bin := req.binaryOutput
		if len(req.outputs) > 0 {
			k := slices.IndexFunc(req.outputs, func(ro reqOutput) bool { return ro.name == t.Name })
			if k < 0 {
				continue
			}
			bin = req.outputs[k].binary
		}
		resp.outputs = append(resp.outputs, respOutput{t: t, binary: bin})
	}
	return resp, inputs, nil
}

// specName names unnamed signature entries by position.
func specName(sp runtime.TensorSpec, i int) string {
	if sp.Name != "" {
		return sp.Name
	}
	return fmt.Sprintf("%d", i)
}

func hasSpec(specs []runtime.TensorSpec, name string) bool {
	for i, sp := range specs {
		if specName(sp, i) == name {
			return true
		}
	}
	return false
}

func describe(specs []runtime.TensorSpec) string {
	parts := make([]string, len(specs))
	for i, sp := range specs {
		parts[i] = fmt.Sprintf("%q %s %v", specName(sp, i), sp.DType, sp.Shape)
	}
	return strings.Join(parts, ", ")
}

// bindInputs checks the request's inputs against the signature and orders
// them as the model expects. Errors wrap ErrBadRequest.
func bindInputs(in []reqInput, specs []runtime.TensorSpec) ([]tensor.Tensor, error) {
	if len(in) != len(specs) {
		for _, x := range in {
			if !hasSpec(specs, x.name) {
				return nil, fmt.Errorf("unknown input %q; the model expects %s: %w", x.name, describe(specs), ErrBadRequest)
			}
		}
		if len(in) > len(specs) {
			return nil, fmt.Errorf("%d inputs given, the model expects %s: %w", len(in), describe(specs), ErrBadRequest)
		}
	}
	out := make([]tensor.Tensor, len(specs))
	for i, sp := range specs {
		name := specName(sp, i)
		var x *reqInput
		for k := range in {
			if in[k].name == name {
				if x != nil {
					return nil, fmt.Errorf("input %q given twice: %w", name, ErrBadRequest)
				}
				x = &in[k]
			}
		}
		if x == nil {
			if len(in) == len(specs) {
				for _, y := range in {
					if !hasSpec(specs, y.name) {
						return nil, fmt.Errorf("unknown input %q; the model expects %s: %w", y.name, describe(specs), ErrBadRequest)
					}
				}
			}
			return nil, fmt.Errorf("missing input %q; the model expects %s: %w", name, describe(specs), ErrBadRequest)
		}
		if x.dtype != sp.DType {
			return nil, fmt.Errorf("input %q has datatype %q, the model expects %s: %w", name, x.dtype, sp.DType, ErrBadRequest)
		}
		if !shapeFits(x.shape, sp.Shape) {
			return nil, fmt.Errorf("input %q has shape %v, the model expects %v: %w", name, x.shape, sp.Shape, ErrBadRequest)
		}
		if want := tensor.NumElements(x.shape) * int64(sp.DType.Size()); int64(len(x.data)) != want {
			return nil, fmt.Errorf("input %q: shape %v of %s needs %d bytes, got %d: %w", name, x.shape, x.dtype, want, len(x.data), ErrBadRequest)
		}
		out[i] = tensor.Tensor{Name: sp.Name, DType: x.dtype, Shape: x.shape, Data: x.data}
	}
	return out, nil
}

// shapeFits reports whether a concrete shape matches a signature shape in
// which -1 is any size.
func shapeFits(got, want []int64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] < 0 || (want[i] >= 0 && got[i] != want[i]) {
			return false
		}
	}
	return true
}
