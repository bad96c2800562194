// Compiled with -mavx2 -mfma -mf16c: called only where the CPU has them.
#define KOLOSAL_Q4_1_KERNEL_NAME q4_1_q8_1_2x2_avx2
#define KOLOSAL_DOT_US8(a, b) \
    _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_set1_epi16(1), _mm256_maddubs_epi16((a), (b))))
#include "q4_1_q8_1.inc"
