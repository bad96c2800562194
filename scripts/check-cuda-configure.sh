#!/usr/bin/env bash
# Configures (does not build) the extension with -DUSE_CUDA=ON, to check the
# CUDA path where a CUDA toolkit (nvcc) is installed. Extra arguments go to
# cmake, e.g. -DCUDA_cublas_LIBRARY=... for a toolkit without cuBLAS.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || { echo "nvcc not found: install the CUDA toolkit" >&2; exit 2; }
py=${PYTHON:-python3}
out=build/cuda-configure
rm -rf "$out"
cmake -S . -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release -DUSE_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80;90}" \
  -DPython_EXECUTABLE="$(command -v "$py")" -Dpybind11_DIR="$("$py" -m pybind11 --cmakedir)" "$@"
grep -q '^GGML_CUDA:BOOL=ON' "$out/CMakeCache.txt"
echo "CUDA configure OK: $(grep '^CMAKE_CUDA_COMPILER:' "$out/CMakeCache.txt")"
