/* Compiled with -O3 -fno-math-errno -ffp-contract=off -fopenmp (see build_kernels.py).
 * -ffp-contract=off keeps the same rounding as the NumPy reference (no fused multiply-add);
 * target_clones gives AVX-512 / AVX2 / baseline versions picked at load time, so the
 * library runs on any x86-64 CPU (no -march=native). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#ifdef _OPENMP
#include <omp.h>
#else
#define omp_get_num_threads() 1
#define omp_get_thread_num() 0
#endif
#include "fo_constants.h" /* generated from fastoptim/backends/_constants.py */
#include "fastoptim.h"
#include "pool.h"

/* Dispatch, set from Python by fastoptim/backends/_threads.py (fo_set_dispatch), the one
 * place the thread policy lives: below fo_parallel_min elements one thread runs the loop
 * (no wake-up); up to a footprint of fo_blocked_max_bytes (the last-level cache) the pool
 * runs it in chunks of FO_POOL_CHUNK_BYTES per array (FO_POOLED); above it, OpenMP runs
 * the chunked loop prefetching ahead. The defaults are _constants.py's. */
static int64_t fo_parallel_min = FO_PARALLEL_MIN;
static int64_t fo_blocked_max_bytes = FO_BLOCKED_MAX_BYTES_DEFAULT;
/* The chunked parallel loop works in chunks of FO_CHUNK_BYTES per array and, before each
 * chunk, prefetches the same span FO_PREFETCH_AHEAD_BYTES further on: with it the Adam loop
 * (two divisions and a square root per element) keeps the memory bus as busy as a plain
 * copy; without it, 0.89-0.93 of that (fastoptim bench). backends/_jit.py's loop uses the
 * same constants (fo_constants.h). */

static inline int fo_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Whether a kernel over n elements of narrays arrays runs through the pool (pool.c): from
 * fo_parallel_min elements up to a footprint of the last-level cache, with more than one
 * thread allowed (omp_get_max_threads: OMP_NUM_THREADS, threadpoolctl and
 * fastoptim.set_num_threads limit the pool as they limit OpenMP). Uses T. */
#define FO_POOLED(n, narrays)                                                             \
    ((n) >= fo_parallel_min && (n) * (int64_t)sizeof(T) * (narrays) <= fo_blocked_max_bytes \
     && fo_threads() > 1)
#define FO_POOL_CHUNK ((int64_t)(FO_POOL_CHUNK_BYTES / sizeof(T)))

/* for (i = 0; i < n; i++) BODY, in the scope of an int threads_ok (0: always serial, as in
 * a pool task); arrays: the parenthesized (a, b, c, d, e) to prefetch,
 * NULL for unused; narrays: the arrays the loop touches (footprint = n * sizeof(T) * narrays).
 * Uses T and FN of the including precision. */
#define FO_FOR(i, n, narrays, arrays, ...)                                                 \
    do {                                                                                   \
        const int64_t line_ = FO_LINE_BYTES / (int64_t)sizeof(T);                          \
        if (!threads_ok || (n) < fo_parallel_min || fo_threads() == 1 ||                   \
            (n) * (int64_t)sizeof(T) * (narrays) <= fo_blocked_max_bytes) {                \
            for (int64_t i = 0; i < (n); i++) { __VA_ARGS__; }                             \
        } else {                                                                           \
            const int64_t chunk_ = FO_CHUNK_BYTES / (int64_t)sizeof(T);                    \
            const int64_t ahead_ = FO_PREFETCH_AHEAD_BYTES / (int64_t)sizeof(T);           \
            const int64_t chunks_ = ((n) + chunk_ - 1) / chunk_;                           \
            _Pragma("omp parallel for schedule(static)")                                   \
            for (int64_t c_ = 0; c_ < chunks_; c_++) {                                     \
                const int64_t lo_ = c_ * chunk_;                                           \
                const int64_t hi_ = lo_ + chunk_ < (n) ? lo_ + chunk_ : (n);               \
                if (lo_ + ahead_ < (n))                                                    \
                    for (int64_t k_ = lo_ + ahead_; k_ < lo_ + ahead_ + chunk_; k_ += line_) \
                        FN(prefetch) (k_, FO_UNPACK arrays);                               \
                for (int64_t i = lo_; i < hi_; i++) { __VA_ARGS__; }                       \
            }                                                                              \
        }                                                                                  \
    } while (0)
#define FO_UNPACK(a, b, c, d, e) a, b, c, d, e

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

void fo_set_dispatch(int64_t parallel_min, int64_t blocked_max_bytes)
{
    fo_parallel_min = parallel_min;
    fo_blocked_max_bytes = blocked_max_bytes;
}

void fo_openmp_set_threads(int n)
{
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}
