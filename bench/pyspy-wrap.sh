#!/usr/bin/env bash
# Runs python "$@" under py-spy without changing the pid (bench/throughput.py --bridge-wrapper):
# a background py-spy attaches to this shell's pid once `exec` has turned it into python, and
# writes collapsed stacks (with native frames, so garbage collection shows) when it exits.
# PYSPY_CODE (not BRIDGE_*: the bridge refuses unknown BRIDGE_ variables): a checkout whose bridge/ the bridge runs (not the reference) (before/after profiles; the benchmark's
# harness sets PYTHONPATH itself). PYSPY_OUT: output directory (default /tmp/pyspy); PYSPY_RATE: samples per second (default 100).
set -euo pipefail
out="${PYSPY_OUT:-/tmp/pyspy}"
mkdir -p "$out"
kind=bridge
for a in "$@"; do [[ "$a" == *reference* ]] && kind=reference; done
pid=$$
py_spy="${PY_SPY:-py-spy}"
(
  # wait until exec has replaced this shell by python (at most 10 s), then attach
  for _ in $(seq 100); do
    grep -q python "/proc/$pid/comm" 2>/dev/null && break
    read -rt 0.1 <> <(:) || true
  done
  exec "$py_spy" record --pid "$pid" --rate "${PYSPY_RATE:-100}" --native \
    --format raw --output "$out/$kind-$(date +%s%N)-$pid.txt" >"$out/$kind-$pid.log" 2>&1
) &
if [[ -n "${PYSPY_CODE:-}" && $kind == bridge ]]; then
  # -P: no working directory first on sys.path, or `-m bridge` would import ./bridge
  export PYTHONPATH="$PYSPY_CODE${PYTHONPATH:+:$PYTHONPATH}"
  exec "${PYTHON:-python}" -P "$@"
fi
exec "${PYTHON:-python}" "$@"
