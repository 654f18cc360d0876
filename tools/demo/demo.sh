#!/usr/bin/env bash
# Starling end to end on one machine: a control plane with its embedded
# broker (TLS only) and store, one agent enrolled with a one-time token, the
# operator's offline keys, a signed model pushed and assigned, and one
# prediction over the agent's unix socket.
# Run through `make demo` (which builds bin/ first).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-bin}
DEVICE=demo-cam-1
MODEL=testdata/models/demo/model.tflite

work=$(mktemp -d /tmp/starling-demo.XXXXXX)
pids=()
cleanup() {
	local rc=$?
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
	if [ $rc -ne 0 ]; then
		echo "demo failed (exit $rc); logs:" >&2
		tail -n 20 "$work"/*.log >&2 || true
	fi
	rm -rf "$work"
	exit $rc
}
trap cleanup EXIT INT TERM

now_ms() { date +%s%3N; }
step_start=0
step() { step_start=$(now_ms); printf '%-56s' "$1"; }
done_step() { printf ' %5d ms\n' $(( $(now_ms) - step_start )); }
total_start=$(now_ms)

# wait_for CMD... : retry for up to 30 s.
wait_for() {
	local deadline=$(( $(now_ms) + 30000 ))
	until "$@" >/dev/null 2>&1; do
		if [ "$(now_ms)" -gt "$deadline" ]; then echo; echo "timed out waiting for: $*" >&2; return 1; fi
		sleep 0.05
	done
}

ctl() { local c=$1 s=$2; shift 2; "$BIN/starlingctl" "$c" "$s" --server "$API" "$@"; }

step "start control plane (embedded broker + store)"
"$BIN/starling-control" --data "$work/control" --listen 127.0.0.1:0 --mqtt-listen 127.0.0.1:0 \
	--device-listen 127.0.0.1:0 >"$work/control.log" 2>&1 &
pids+=($!)
wait_for grep -q '^starling-control: admin-token-file ' "$work/control.log"
field() { sed -n "s/^starling-control: $1 //p" "$work/control.log" | head -n1; }
API=$(field api)
BROKER=$(field mqtt)
DEVICE_API=$(field device-api)
CA_FINGERPRINT=$(field ca-fingerprint)
# starlingctl acts as the admin whose token the first start wrote.
export STARLING_TOKEN_FILE=$(field admin-token-file)
done_step

step "create the operator's offline TUF keys and root.json"
ctl keys init --dir "$work/keys" >/dev/null
done_step

step "make a one-time enrollment token for $DEVICE"
ctl device enroll-token --device "$DEVICE" --ttl 10m >"$work/enroll.token"
done_step

step "start agent $DEVICE (enrolls, then mqtts)"
"$BIN/starling-agent" --broker "$BROKER" --data "$work/agent" \
	--enroll-url "$DEVICE_API" --enroll-token-file "$work/enroll.token" --ca-fingerprint "$CA_FINGERPRINT" \
	--socket "$work/agent.sock" --trust-root "$work/keys/root.json" >"$work/agent.log" 2>&1 &
pids+=($!)
device_known() { ctl device list | grep -q "^$DEVICE .*online"; }
wait_for device_known
grep -q 'msg="device enrolled"' "$work/agent.log"
done_step

step "sign and push model demo:1"
ctl model push --dir "$work/keys" --name demo --version 1 --file "$MODEL" >"$work/push.out"
done_step

step "assign demo:1 to $DEVICE"
ctl device assign "$DEVICE" --model demo:1 >/dev/null
done_step

step "wait until the agent reports demo:1 active"
model_active() { ctl device list | grep "^$DEVICE " | grep -q 'demo:1=active'; }
wait_for model_active
done_step

request='{"inputs":[{"name":"input","datatype":"FP32","shape":[1,8],"data":[0.5,-1.25,2.0,0.0,1.5,-0.75,0.25,3.0]}]}'
step "inference over the unix socket"
response=$(curl -sS --fail-with-body --unix-socket "$work/agent.sock" \
	-H 'Content-Type: application/json' -d "$request" http://localhost/v2/models/demo/infer)
done_step

echo
echo "$(cat "$work/push.out")"
echo "request:    curl --unix-socket agent.sock -d '$request' http://localhost/v2/models/demo/infer"
echo "prediction: $response"
echo

step "shut down"
for pid in "${pids[@]}"; do kill -TERM "$pid"; done
for pid in "${pids[@]}"; do wait "$pid"; done
pids=()
done_step
printf '%-56s %5d ms\n' "total" $(( $(now_ms) - total_start ))
