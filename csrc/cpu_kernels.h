// kolosal's own CPU kernels, put in place of llama.cpp's where they give the
// same results faster.
//
// One so far: the Q4_1 x Q8_1 dot product (SmolLM2's and other Q4_1 models'
// weights against the activations) on x86-64 with AVX2, FMA and F16C. ggml's
// kernel for it computes one weight row against one activation column a
// call; ggml's matrix multiplication can hand a kernel two rows and two
// columns at once (its ARM kernels use that), and kolosal's kernel does so:
// about 1.4 times faster on prompts and batches, and bit for bit the same
// results. It is installed once, before the first engine computes anything,
// in ggml's CPU type table, and only after a check on random blocks gives
// exactly ggml's results. KOLOSAL_CPU_KERNELS=llama.cpp in the environment
// keeps llama.cpp's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kolosal::cpu_kernels {

// ggml's block layouts (ggml-common.h), 32 weights or activations a block.
constexpr int kQk = 32;
struct BlockQ4_1 {
    uint16_t d;  // scale, fp16
    uint16_t m;  // minimum, fp16
    uint8_t qs[kQk / 2];
};
struct BlockQ8_1 {
    uint16_t d;  // scale, fp16
    uint16_t s;  // d * sum(qs), fp16
    int8_t qs[kQk];
};

// Two rows of x against two columns of y (ggml's vec_dot with nrc == 2):
// s[0] = x0.y0, s[1] = x1.y0, s[bs] = x0.y1, s[bs + 1] = x1.y1.
void q4_1_q8_1_2x2_avx2(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by);
void q4_1_q8_1_2x2_vnni(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by);

struct KernelInfo {
    std::string op;      // e.g. "mul_mat q4_1 x q8_1"
    std::string source;  // "kolosal (avx512vnni)", "kolosal (avx2)" or "llama.cpp"
    std::string reason;  // why llama.cpp's is used, when it is
};

// Installs kolosal's kernels where they apply (once per process; later calls
// do nothing). Must run before any ggml CPU computation in the process.
void install();

// Whether ggml's matrix multiplication uses kolosal's Q4_1 kernel (installs first).
bool q4_1_installed();

// What install() did, one entry per kernel.
std::vector<KernelInfo> report();

// Checks a kernel against llama.cpp's on `rows` random rows and `cols`
// random columns of length n: the number of results that differ in any bit.
// Runs llama.cpp's and kolosal's kernels directly, installed or not.
// SIZE_MAX where there is no kolosal kernel for this CPU, or n is not a
// positive multiple of 32 up to 2^20, or rows or cols is not in [2, 4096].
size_t mismatches(int n, int rows, int cols, uint32_t seed);

}  // namespace kolosal::cpu_kernels
