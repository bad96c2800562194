#include "cpu_kernels.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <random>

#include "ggml-cpu.h"
#include "ggml.h"

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

namespace kolosal::cpu_kernels {
namespace {

using Dot2x2 = void (*)(int, float *, size_t, const void *, size_t, const void *, size_t);

ggml_vec_dot_t llama_cpp_q4_1 = nullptr;  // llama.cpp's kernel, once replaced
Dot2x2 kolosal_q4_1 = nullptr;            // ours, once installed
std::vector<KernelInfo> installed;
std::once_flag once;

// What ggml's matrix multiplication calls for Q4_1 weights once installed:
// ours for two rows and two columns, llama.cpp's for one (odd row or column
// counts, and matrix-vector products).
void q4_1_q8_1(int n, float * s, size_t bs, const void * vx, size_t bx, const void * vy, size_t by, int nrc) {
    if (nrc == 2) {
        kolosal_q4_1(n, s, bs, vx, bx, vy, by);
    } else {
        llama_cpp_q4_1(n, s, bs, vx, bx, vy, by, nrc);
    }
}

// Our Q4_1 kernel for this CPU, and the instruction set it uses.
Dot2x2 pick_q4_1(std::string & isa, std::string & why) {
#if defined(KOLOSAL_X86_KERNELS)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) {
        why = "the CPU lacks AVX2, FMA or F16C";
        return nullptr;
    }
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
        isa = "avx512vnni";
        return &q4_1_q8_1_2x2_vnni;
    }
    isa = "avx2";
    return &q4_1_q8_1_2x2_avx2;
#else
    (void) isa;
    why = "no kolosal kernel for this platform (x86-64 built with GCC or Clang only)";
    return nullptr;
#endif
}

bool layouts_match() {
    return ggml_blck_size(GGML_TYPE_Q4_1) == kQk && ggml_type_size(GGML_TYPE_Q4_1) == sizeof(BlockQ4_1) &&
           ggml_blck_size(GGML_TYPE_Q8_1) == kQk && ggml_type_size(GGML_TYPE_Q8_1) == sizeof(BlockQ8_1);
}

#if defined(__linux__)
// The protection of the mapping holding [begin, end), from /proc/self/maps;
// -1 when no one mapping holds all of it.
int protection_of(uintptr_t begin, uintptr_t end) {
    std::ifstream maps("/proc/self/maps");
    std::string line;
    while (std::getline(maps, line)) {
        unsigned long lo = 0, hi = 0;
        char perms[5] = {};
        if (std::sscanf(line.c_str(), "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
        if (begin < lo || begin >= hi) continue;
        if (end > hi) return -1;
        return (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
               (perms[2] == 'x' ? PROT_EXEC : 0);
    }
    return -1;
}
#endif

// ggml's type table is constant data: make its page writable for the two
// stores, then give the page its protection back.
bool replace_q4_1_entry(std::string & why) {
#if defined(__linux__)
    auto * entry = const_cast<ggml_type_traits_cpu *>(ggml_get_type_traits_cpu(GGML_TYPE_Q4_1));
    const long page = sysconf(_SC_PAGESIZE);
    const auto begin = reinterpret_cast<uintptr_t>(entry) & ~uintptr_t(page - 1);
    const auto end = (reinterpret_cast<uintptr_t>(entry + 1) + page - 1) & ~uintptr_t(page - 1);
    const int prot = protection_of(begin, end);
    if (prot < 0) {
        why = "ggml's CPU type table is not in one mapping";
        return false;
    }
    void * base = reinterpret_cast<void *>(begin);
    if ((prot & PROT_WRITE) == 0 && mprotect(base, end - begin, prot | PROT_WRITE) != 0) {
        why = std::string("mprotect failed: ") + std::strerror(errno);
        return false;
    }
    // The kernel first: a matrix multiplication that reads nrows == 2 must
    // find a kernel that takes two rows.
    __atomic_store_n(&entry->vec_dot, &q4_1_q8_1, __ATOMIC_RELEASE);
    __atomic_store_n(&entry->nrows, int64_t(2), __ATOMIC_RELEASE);
    if ((prot & PROT_WRITE) == 0) (void) mprotect(base, end - begin, prot);
    return true;
#else
    why = "replacing a kernel is implemented on Linux only";
    return false;
#endif
}

void install_once() {
    KernelInfo q4_1{"mul_mat q4_1 x q8_1", "llama.cpp", ""};
    ggml_cpu_init();
    const auto * entry = ggml_get_type_traits_cpu(GGML_TYPE_Q4_1);
    const char * env = std::getenv("KOLOSAL_CPU_KERNELS");
    std::string isa;
    if (env && (std::strcmp(env, "llama.cpp") == 0 || std::strcmp(env, "stock") == 0)) {
        q4_1.reason = std::string("KOLOSAL_CPU_KERNELS=") + env;
    } else if (!layouts_match()) {
        q4_1.reason = "ggml's Q4_1 or Q8_1 block layout is not the one this kernel reads";
    } else if (entry->vec_dot_type != GGML_TYPE_Q8_1 || entry->nrows != 1) {
        q4_1.reason = "llama.cpp's Q4_1 kernel here is not the one-row kernel against Q8_1 that this replaces";
    } else if (Dot2x2 k = pick_q4_1(isa, q4_1.reason)) {
        llama_cpp_q4_1 = entry->vec_dot;
        kolosal_q4_1 = k;
        // Prompt-length rows of a small and a large model's widths: {n, rows, cols, seed}.
        const int checks[][4] = {{576, 24, 6, 1}, {4096, 8, 4, 2}};
        size_t bad = 0, results = 0;
        for (const auto & c : checks) {
            bad += mismatches(c[0], c[1], c[2], uint32_t(c[3]));
            results += size_t(c[1]) * size_t(c[2]);
        }
        if (bad != 0) {
            q4_1.reason = "kolosal's kernel differs from llama.cpp's on this machine (" + std::to_string(bad) +
                          " of " + std::to_string(results) + " results)";
        } else if (replace_q4_1_entry(q4_1.reason)) {
            q4_1.source = "kolosal (" + isa + ")";
        }
    }
    installed.push_back(q4_1);
}

}  // namespace

void install() { std::call_once(once, install_once); }

bool q4_1_installed() {
    install();
    return ggml_get_type_traits_cpu(GGML_TYPE_Q4_1)->vec_dot == &q4_1_q8_1;
}

std::vector<KernelInfo> report() {
    install();
    return installed;
}

size_t mismatches(int n, int rows, int cols, uint32_t seed) {
    ggml_cpu_init();
    std::string isa, why;
    const Dot2x2 ours = kolosal_q4_1 ? kolosal_q4_1 : pick_q4_1(isa, why);
    const ggml_vec_dot_t theirs = llama_cpp_q4_1 ? llama_cpp_q4_1 : ggml_get_type_traits_cpu(GGML_TYPE_Q4_1)->vec_dot;
    if (!ours || n <= 0 || n > (1 << 20) || n % kQk != 0 || rows < 2 || cols < 2 || rows > 4096 || cols > 4096) {
        return size_t(-1);
    }
    rows -= rows % 2;
    cols -= cols % 2;

    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> scale(0.01f, 4.0f);
    const size_t x_row = ggml_row_size(GGML_TYPE_Q4_1, n), y_row = ggml_row_size(GGML_TYPE_Q8_1, n);
    std::vector<float> w(size_t(n) * std::max(rows, cols));
    std::vector<char> x(x_row * rows), y(y_row * cols);
    for (int r = 0; r < rows; ++r) {
        const float k = scale(rng), shift = normal(rng);
        for (int i = 0; i < n; ++i) w[size_t(r) * n + i] = k * normal(rng) + shift;
    }
    ggml_quantize_chunk(GGML_TYPE_Q4_1, w.data(), x.data(), 0, rows, n, nullptr);
    const auto to_q8_1 = ggml_get_type_traits_cpu(GGML_TYPE_Q8_1)->from_float;
    for (int c = 0; c < cols; ++c) {
        const float k = scale(rng);
        for (int i = 0; i < n; ++i) w[size_t(c) * n + i] = k * normal(rng);
        to_q8_1(w.data() + size_t(c) * n, y.data() + y_row * c, n);
    }

    size_t bad = 0;
    for (int c = 0; c < cols; c += 2) {
        for (int r = 0; r < rows; r += 2) {
            float got[4];  // got[dr + 2 * dc]: row r + dr against column c + dc
            ours(n, got, 2, x.data() + x_row * r, x_row, y.data() + y_row * c, y_row);
            for (int k = 0; k < 4; ++k) {
                const int dr = k % 2, dc = k / 2;
                float want = 0.0f;
                theirs(n, &want, 0, x.data() + x_row * (r + dr), 0, y.data() + y_row * (c + dc), 0, 1);
                bad += std::memcmp(&got[k], &want, sizeof(float)) != 0;
            }
        }
    }
    return bad;
}

}  // namespace kolosal::cpu_kernels
