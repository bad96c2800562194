#!/usr/bin/env bash
# Memory and thread checks of the native core (slow; not part of CI). Builds,
# in build/sanitize (the normal build in build/cp3*/ is left alone), our code
# instrumented and llama.cpp as usual (CMake option KOLOSAL_SANITIZE), then:
#   1. AddressSanitizer + UndefinedBehaviorSanitizer: the engine, lifecycle,
#      scheduler, embedding and registry tests against the instrumented
#      module, and the native stress driver with leak checking;
#   2. ThreadSanitizer: the native stress driver (many submits and cancels,
#      every Engine method called from threads while two others close it).
# Usage: bash scripts/sanitize.sh [asan|tsan|all]   (default: all)
# Environment: JOBS (parallel compile jobs), KOLOSAL_TEST_MODEL (model path),
# STRESS_ROUNDS (submit/cancel rounds per thread, default 30), BUILD_ONLY=1,
# STRESS_TIMEOUT (seconds a stress run may take, default 3600: past it, the
# threads' backtraces are printed when gdb is installed, and the run fails).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
what=${1:-all}
# shellcheck disable=SC1091
. .venv/bin/activate
jobs=${JOBS:-$(nproc)}
model=${KOLOSAL_TEST_MODEL:-$(cd / && python -m kolosal.demo_model -q)}
export KOLOSAL_TEST_MODEL=$model
rounds=${STRESS_ROUNDS:-30}
stress_timeout=${STRESS_TIMEOUT:-3600}
bdir=build/sanitize

echo "== build ($bdir)"
cmake -S "$root" -B "$bdir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKOLOSAL_SANITIZE=ON \
  -DPython_EXECUTABLE="$(command -v python)" -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" \
  -DSKBUILD_PROJECT_VERSION=0.0.0 >/dev/null
case "$what" in
  asan) targets="_native kolosal_stress_asan" ;;
  tsan) targets="kolosal_stress_tsan" ;;
  all) targets="_native kolosal_stress_asan kolosal_stress_tsan" ;;
  *) echo "usage: $0 [asan|tsan|all]" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086
ninja -C "$bdir" -j "$jobs" $targets
[ -n "${BUILD_ONLY:-}" ] && exit 0

status=0
SECONDS=0

# Runs the stress driver; a run past STRESS_TIMEOUT is reported with every
# thread's backtrace (where it waits) and killed.
run_stress() {
  local start=$SECONDS
  "$@" &
  local pid=$!
  (
    for ((i = 0; i < stress_timeout; i++)); do
      sleep 1
      kill -0 "$pid" 2>/dev/null || exit 0
    done
    echo "error: the stress run took more than ${stress_timeout}s" >&2
    if command -v gdb >/dev/null; then
      gdb -p "$pid" -batch -ex "thread apply all bt" >&2 2>/dev/null || true
    fi
    kill -KILL "$pid"
  ) &
  local watcher=$!
  local rc=0
  wait "$pid" || rc=$?
  wait "$watcher" || true
  echo "   (stress run: $((SECONDS - start)) s, exit $rc)"
  return "$rc"
}

run_asan() {
  # A copy of the package holding the instrumented module, imported instead of ./kolosal.
  local stage=$root/$bdir/pkg
  rm -rf "$stage"
  mkdir -p "$stage"
  cp -r kolosal "$stage/"
  find "$stage/kolosal" \( -name '_native*.so' -o -name '__pycache__' \) -prune -exec rm -rf {} +
  cp "$bdir"/_native*.so "$stage/kolosal/"
  # The runtime first; libstdc++ too, or ASan's __cxa_throw interceptor finds
  # nothing to forward to (the interpreter itself does not load libstdc++).
  local preload
  preload="$(${CXX:-c++} -print-file-name=libasan.so) $(${CXX:-c++} -print-file-name=libstdc++.so)"
  # The interpreter's own allocations are not ours to report as leaks. Reports
  # go to files as well: pytest captures stderr, and a halted run loses it.
  local logs=$root/$bdir/logs
  rm -rf "$logs"
  mkdir -p "$logs"
  export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:log_path=$logs/asan
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan
  if ! (cd / && LD_PRELOAD=$preload PYTHONPATH=$stage python -c \
        "import kolosal._native as m, sys; sys.exit(0 if m.__file__.startswith('$stage') else 1)"); then
    echo "error: the instrumented module is not the one imported" >&2
    return 1
  fi
  echo "== ASan+UBSan: tests"
  # The pytest script (not python -m pytest): the source tree must not shadow the staged package.
  LD_PRELOAD=$preload PYTHONPATH=$stage pytest -p no:cacheprovider -q \
    tests/test_engine.py tests/test_engine_lifecycle.py tests/test_scheduler.py tests/test_embeddings.py \
    tests/server/test_registry.py || status=1
  if compgen -G "$logs/*" >/dev/null; then
    echo "sanitizer reports:" >&2
    cat "$logs"/* >&2
    status=1
  fi
  echo "== ASan+UBSan: stress driver (leak checks on)"
  ASAN_OPTIONS=detect_leaks=1:halt_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    run_stress "$bdir/kolosal_stress_asan" "$model" "$rounds" || status=1
}

run_tsan() {
  echo "== TSan: stress driver"
  TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:suppressions=$root/scripts/tsan.supp \
    run_stress "$bdir/kolosal_stress_tsan" "$model" "$rounds" || status=1
}

case "$what" in
  asan) run_asan ;;
  tsan) run_tsan ;;
  all) run_asan; run_tsan ;;
esac
echo "== $((SECONDS / 60)) min $((SECONDS % 60)) s"
if [ "$status" -eq 0 ]; then echo "sanitize: clean"; else echo "sanitize: FAILED" >&2; fi
exit "$status"
