// Compiled with -mavx2 -mfma -mf16c -mavx512vl -mavx512vnni: called only where
// the CPU has them. The byte products cannot overflow 16 bits (4-bit weights
// times bytes of at most 127 in magnitude), so the sums are the same integers
// as the AVX2 form's.
#define KOLOSAL_Q4_1_KERNEL_NAME q4_1_q8_1_2x2_vnni
#define KOLOSAL_DOT_US8(a, b) _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), (a), (b)))
#include "q4_1_q8_1.inc"
