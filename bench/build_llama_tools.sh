#!/usr/bin/env bash
# Builds llama.cpp's own llama-bench, llama-batched-bench and llama-server
# from vendor/llama.cpp (the tree kolosal compiles) into build/llama-tools,
# for side-by-side benchmarks. Not part of the package build.
# LLAMA_TOOLS_CUDA=1 builds them with the CUDA backend into build/llama-tools-cuda
# (CUDA_ARCHS: the GPU architectures, default 80;90).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 vendor/fetch_llama_cpp.py
out=build/llama-tools
backend=()
if [ "${LLAMA_TOOLS_CUDA:-0}" = 1 ]; then
  out=build/llama-tools-cuda
  backend=(-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHS:-80;90}")
fi
cmake -S vendor/llama.cpp -B "$out" -G Ninja -DCMAKE_BUILD_TYPE=Release "${backend[@]}" \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF > "$out.configure.log"
cmake --build "$out" --target llama-bench llama-batched-bench llama-server
ls -1 "$out"/bin/llama-bench "$out"/bin/llama-batched-bench "$out"/bin/llama-server
