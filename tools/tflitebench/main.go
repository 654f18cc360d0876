// Command tflitebench times gotflite against the official TensorFlow Lite
// interpreter on the same model files with the same thread count, side by
// side in one run, and prints a Markdown table of median latencies and
// their ratio.
//
// The official side runs tools/tflitebench/official.py (tf.lite.Interpreter
// with XNNPACK; only invoke() is timed) under the given Python. The gotflite
// side times Model.Run in process on the same kind of input. Use
// `make bench-tflite`, which makes the models and the Python venv first.
//
// On a shared machine, --rounds N alternates the two sides N times per row
// and pools the samples, so that a burst of load falls on both; the table
// then also shows each side's fastest run, which load can only slow down.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	starruntime "github.com/starling-edge/starling/agent/runtime"
	"github.com/starling-edge/starling/agent/runtime/gotflite"
	"github.com/starling-edge/starling/shared/tensor"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "tflitebench:", err)
		os.Exit(1)
	}
}

type result struct {
	MedianUS float64   `json:"median_us"`
	P90US    float64   `json:"p90_us"`
	MinUS    float64   `json:"min_us"`
	Runs     int       `json:"runs"`
	TimesUS  []float64 `json:"times_us"`
	Err      string    `json:"-"`
}

// pool merges the samples of several rounds into one result.
func pool(rs []result) result {
	var all []float64
	for _, r := range rs {
		if r.Err != "" {
			return r
		}
		all = append(all, r.TimesUS...)
	}
	return summarize(all)
}

// summarize sorts times (in microseconds) and takes their statistics.
func summarize(times []float64) result {
	if len(times) == 0 {
		return result{Err: "no timed runs"}
	}
	slices.Sort(times)
	return result{MedianUS: times[len(times)/2], P90US: times[len(times)*9/10], MinUS: times[0], Runs: len(times), TimesUS: times}
}

// loadAverage returns the 1-minute load average, or "" where unknown.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("tflitebench", flag.ContinueOnError)
	dir := fs.String("models", ".cache/bench-models", "folder with the benchmark .tflite files (made by makemodels.py)")
	names := fs.String("model", "mobilenet_v2_1.0_224_float.tflite,mobilenet_v2_1.0_224_int8.tflite", "comma-separated model files in --models")
	threadList := fs.String("threads", "1,2", "comma-separated thread counts")
	runs := fs.Int("runs", 30, "timed runs per measurement")
	warmup := fs.Int("warmup", 5, "untimed runs first")
	python := fs.String("python", ".venv/bin/python", "Python with tensorflow, for the official interpreter")
	script := fs.String("official", "tools/tflitebench/official.py", "the official-interpreter timing script")
	rounds := fs.Int("rounds", 1, "alternate gotflite and the official interpreter this many times per row, pooling the runs")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rounds < 1 {
		return fmt.Errorf("--rounds: %d is not a positive count", *rounds)
	}
	var threads []int
	for _, s := range strings.Split(*threadList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--threads: %q is not a positive count", s)
		}
		threads = append(threads, n)
	}
	fmt.Fprintf(out, "tflitebench: %s/%s, GOMAXPROCS %d, %d CPUs, %d rounds of %d runs after %d warm-up, load average %s at start, %s\n\n",
		runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), runtime.NumCPU(), *rounds, *runs, *warmup, loadAverage(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintln(out, "| model | threads | gotflite median | official (XNNPACK) median | ratio | gotflite min | official min | min ratio |")
	fmt.Fprintln(out, "|---|---|---|---|---|---|---|---|")
	for _, name := range strings.Split(*names, ",") {
		path := filepath.Join(*dir, strings.TrimSpace(name))
		art, err := os.ReadFile(path)
		if err != nil {
			return fmt.Errorf("%w (make the models with `make bench-tflite` or tools/tflitebench/makemodels.py)", err)
		}
		for _, n := range threads {
			var gs, ofs []result
			for range *rounds {
				gs = append(gs, timeGotflite(ctx, art, n, *runs, *warmup))
				ofs = append(ofs, timeOfficial(ctx, *python, *script, path, n, *runs, *warmup))
			}
			g, o := pool(gs), pool(ofs)
			ratio, minRatio := "-", "-"
			if g.Err == "" && o.Err == "" && o.MedianUS > 0 && o.MinUS > 0 {
				ratio = fmt.Sprintf("%.2fx", g.MedianUS/o.MedianUS)
				minRatio = fmt.Sprintf("%.2fx", g.MinUS/o.MinUS)
			}
			fmt.Fprintf(out, "| %s | %d | %s | %s | %s | %s | %s | %s |\n", strings.TrimSuffix(filepath.Base(path), ".tflite"), n,
				cell(g), cell(o), ratio, minCell(g), minCell(o), minRatio)
		}
	}
	return nil
}

func cell(r result) string {
	if r.Err != "" {
		return "error: " + r.Err
	}
	return fmt.Sprintf("%.2f ms", r.MedianUS/1000)
}

func minCell(r result) string {
	if r.Err != "" {
		return "-"
	}
	return fmt.Sprintf("%.2f ms", r.MinUS/1000)
}

// timeGotflite loads the model with the given thread count and times Run.
func timeGotflite(ctx context.Context, art []byte, threads, runs, warmup int) result {
	m, err := gotflite.New(gotflite.Options{}).Load(art, starruntime.LoadOptions{Threads: threads})
	if err != nil {
		return result{Err: err.Error()}
	}
	defer m.Close()
	inputs := randomInputs(m.Signature())
	for i := 0; i < warmup; i++ {
		if _, err := m.Run(ctx, inputs); err != nil {
			return result{Err: err.Error()}
		}
	}
	times := make([]float64, 0, runs)
	for i := 0; i < runs; i++ {
		t0 := time.Now()
		if _, err := m.Run(ctx, inputs); err != nil {
			return result{Err: err.Error()}
		}
		times = append(times, float64(time.Since(t0).Nanoseconds())/1000)
	}
	return summarize(times)
}

// randomInputs fills each input with fixed-seed values: uniform [-1, 1) for
// floats, the full range for integers.
func randomInputs(sig starruntime.Signature) []tensor.Tensor {
	rng := rand.New(rand.NewPCG(3, 3))
	var out []tensor.Tensor
	for _, spec := range sig.Inputs {
		shape := slices.Clone(spec.Shape)
		for i, d := range shape {
			if d < 0 {
				shape[i] = 1
			}
		}
		n := tensor.NumElements(shape)
		t := tensor.Tensor{Name: spec.Name, DType: spec.DType, Shape: shape, Data: make([]byte, n*int64(spec.DType.Size()))}
		if spec.DType == tensor.Fp32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = rng.Float32()*2 - 1
			}
			t = tensor.FromFloat32(spec.Name, shape, v)
		} else {
			for i := range t.Data {
				t.Data[i] = byte(rng.Uint32())
			}
		}
		out = append(out, t)
	}
	return out
}

func timeOfficial(ctx context.Context, python, script, model string, threads, runs, warmup int) result {
	cmd := exec.CommandContext(ctx, python, script, "--model", model, "--threads", strconv.Itoa(threads),
		"--runs", strconv.Itoa(runs), "--warmup", strconv.Itoa(warmup))
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return result{Err: fmt.Sprintf("%s exited %d", python, ee.ExitCode())}
		}
		return result{Err: err.Error()}
	}
	var r result
	if err := json.Unmarshal(b, &r); err != nil {
		return result{Err: fmt.Sprintf("official.py printed %q: %v", b, err)}
	}
	if len(r.TimesUS) == 0 {
		return result{Err: "official.py printed no times_us"}
	}
	return summarize(r.TimesUS)
}
