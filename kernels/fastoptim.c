/* Compiled with -O3 -fno-math-errno -ffp-contract=off -fopenmp (see build_kernels.py).
 * -ffp-contract=off keeps the same rounding as the NumPy reference (no fused multiply-add);
 * target_clones gives AVX-512 / AVX2 / baseline versions picked at load time, so the
 * library runs on any x86-64 CPU (no -march=native). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include "fastoptim.h"

/* Below this many elements one thread is faster than waking the team (measured, see README). */
#define FO_PARALLEL_MIN 32768
#define FO_DECAY_NONE 0
#define FO_DECAY_L2 1
#define FO_DECAY_DECOUPLED 2

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(FO_NO_CLONES)
#define FO_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FO_CLONES
#endif

#define T float
#define SQRT sqrtf
#define FN(name) name##_f32
#include "fastoptim_kernels.inc"
#undef T
#undef SQRT
#undef FN

#define T double
#define SQRT sqrt
#define FN(name) name##_f64
#include "fastoptim_kernels.inc"
#undef T
#undef SQRT
#undef FN

int fo_openmp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

void fo_openmp_set_threads(int n)
{
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}
