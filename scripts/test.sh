#!/usr/bin/env bash
# Run the test suite once per Keras backend (KERAS_BACKEND is read once per
# process) and fail if any backend fails. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null || { echo "setup failed"; exit 1; }
export TF_CPP_MIN_LOG_LEVEL=3
.venv/bin/ruff check keras_towers tests guides benchmarks scripts || exit 1
# The embedded corpus and evaluation sets (offline; idempotent, ~1 s when built).
.venv/bin/keras-towers data prepare >/dev/null || { echo "data prepare failed"; exit 1; }
# The three per-backend passes run one after the other; KERAS_TOWERS_TEST_JOBS=2
# runs two at a time (for machines with more cores: on 2 cores a jax pass
# alone keeps 1.2 cores busy, and the jax and tensorflow passes together
# held 16 GB and both cores, with no wall-time gain measured). Each pass
# writes its own log and pytest temp dir; the logs are printed in order
# once every pass has ended.
jobs=${KERAS_TOWERS_TEST_JOBS:-1}
logs=$(mktemp -d)
run_backend() {
  if [ "$jobs" -le 1 ]; then
    echo "=== KERAS_BACKEND=$1 ==="  # streamed as it runs
    KERAS_BACKEND=$1 .venv/bin/python -m pytest -q -m "not slow and not packaging" \
      -p no:cacheprovider --basetemp="$logs/tmp-$1" "${@:2}"
  else
    KERAS_BACKEND=$1 .venv/bin/python -m pytest -q -m "not slow and not packaging" \
      -p no:cacheprovider --basetemp="$logs/tmp-$1" "${@:2}" >"$logs/$1.log" 2>&1
  fi
  echo $? >"$logs/$1.rc"
}
running=0
for backend in jax tensorflow torch; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n
    running=$((running - 1))
  fi
  run_backend "$backend" "$@" &
  running=$((running + 1))
done
wait
passed=0
failed=0
for backend in jax torch tensorflow; do
  if [ -f "$logs/$backend.log" ]; then
    echo "=== KERAS_BACKEND=$backend ==="
    cat "$logs/$backend.log"
  fi
  if [ "$(cat "$logs/$backend.rc" 2>/dev/null)" = "0" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    echo "backend $backend FAILED"
  fi
done
rm -rf "$logs"
echo "backends: $passed passed, $failed failed"
# Slow tests (EfficientNet-Lite1/2 parity, ~15-40 s per backend): a separate
# step, so the default suite above stays fast to iterate on.
slow_failed=0
for backend in jax torch tensorflow; do
  echo "=== slow tests, KERAS_BACKEND=$backend ==="
  KERAS_BACKEND=$backend .venv/bin/python -m pytest -q -m "slow and not packaging" "$@"
  rc=$?
  # 5: no slow test collected, which is not a failure.
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
    slow_failed=$((slow_failed + 1))
    echo "slow tests on $backend FAILED"
  fi
done
# Packaging (build the wheel, install it into a fresh venv, load a shipped
# preset from it): backend-independent, so one run, not one per backend.
echo "=== packaging tests ==="
.venv/bin/python -m pytest -q -m packaging "$@"
rc=$?
packaging_failed=0
# 5: no packaging test collected, which is not a failure.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
  packaging_failed=1
  echo "packaging tests FAILED"
fi
[ "$failed" -eq 0 ] && [ "$slow_failed" -eq 0 ] && [ "$packaging_failed" -eq 0 ]
