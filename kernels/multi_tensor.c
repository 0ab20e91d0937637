/* Multi-tensor kernels (see multi_tensor.h): a loop over the table's rows that calls the
 * single-array kernels of fastoptim.c on each row, so the per-element math and the
 * vectorized code are exactly those of one call per tensor, without one Python call per
 * tensor. The rows are small (the caller runs big tensors through the parallel
 * single-array kernels), so each runs serially; the blocks are the chunks of one call of
 * fastoptim's pool (pool.c): one block runs on the caller, several on every thread that is
 * free to claim one. */
#include <stdint.h>
#include "fo_constants.h" /* generated from fastoptim/backends/_constants.py */
#include "fastoptim.h"
#include "multi_tensor.h"
#include "pool.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* the calling thread's OpenMP limit (fastoptim.set_num_threads, OMP_NUM_THREADS,
 * threadpoolctl): the pool uses no more threads than OpenMP would */
static int fo_multi_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* the table's columns (fastoptim/backends/_multi_table.py) */
enum { COL_N = FO_COL_N, COL_PARAM = FO_COL_PARAM, COL_GRAD = FO_COL_GRAD,
       COL_STATE0 = FO_COL_STATE0, NCOL = FO_NCOL };

int fo_multi_table_ncol(void) { return NCOL; }

#define ADDRESS(T, row, col) ((T *)(uintptr_t)(row)[col])

/* The rows of blocks lo <= b < hi, one after the other (a pool task, or the whole call). */
#define SGD_ROWS(SUFFIX, T, s)                                                                \
    for (int64_t b = lo; b < hi; b++)                                                         \
        for (int64_t r = (s)->bounds[b]; r < (s)->bounds[b + 1]; r++) {                       \
            const int64_t *row = (s)->rows + r * NCOL;                                        \
            if (row[COL_N] <= 0) continue;                                                    \
            fo_sgd_##SUFFIX(ADDRESS(T, row, COL_PARAM), ADDRESS(T, row, COL_GRAD),            \
                            (s)->has_momentum ? ADDRESS(T, row, COL_STATE0) : (T *)0,         \
                            row[COL_N], (s)->grad_scale, (s)->neg_lr, (s)->weight_decay,      \
                            (s)->momentum, (s)->one_minus_dampening, (s)->has_weight_decay,   \
                            (s)->has_momentum, (s)->first_step, (s)->nesterov,                \
                            (s)->maximize);                                                   \
        }

#define MULTI_SGD(SUFFIX, T)                                                                  \
    struct multi_sgd_args_##SUFFIX {                                                          \
        const int64_t *rows; const int64_t *bounds; int64_t blocks;                           \
        T grad_scale; T neg_lr; T weight_decay; T momentum; T one_minus_dampening;            \
        int has_weight_decay; int has_momentum; int first_step; int nesterov; int maximize;   \
    };                                                                                        \
    static void multi_sgd_task_##SUFFIX(void *args, int64_t lo, int64_t hi)                   \
    {                                                                                         \
        const struct multi_sgd_args_##SUFFIX *s = args;                                       \
        SGD_ROWS(SUFFIX, T, s)                                                                \
    }                                                                                         \
    void fo_multi_sgd_##SUFFIX(const int64_t *rows, const int64_t *bounds, int64_t blocks,    \
                               T grad_scale, T neg_lr, T weight_decay, T momentum,            \
                               T one_minus_dampening,                                         \
                               int has_weight_decay, int has_momentum, int first_step,        \
                               int nesterov, int maximize)                                    \
    {                                                                                         \
        struct multi_sgd_args_##SUFFIX a = {rows, bounds, blocks, grad_scale, neg_lr,         \
                                            weight_decay, momentum, one_minus_dampening,      \
                                            has_weight_decay, has_momentum, first_step,       \
                                            nesterov, maximize};                              \
        fo_pool_run(multi_sgd_task_##SUFFIX, &a, blocks, 1, fo_multi_threads());              \
    }

#define ADAM_ROWS(SUFFIX, T, s)                                                               \
    for (int64_t b = lo; b < hi; b++)                                                         \
        for (int64_t r = (s)->bounds[b]; r < (s)->bounds[b + 1]; r++) {                       \
            const int64_t *row = (s)->rows + r * NCOL;                                        \
            if (row[COL_N] <= 0) continue;                                                    \
            fo_adam_##SUFFIX(ADDRESS(T, row, COL_PARAM), ADDRESS(T, row, COL_GRAD),           \
                             ADDRESS(T, row, COL_STATE0), ADDRESS(T, row, COL_STATE0 + 1),    \
                             (s)->amsgrad ? ADDRESS(T, row, COL_STATE0 + 2) : (T *)0,         \
                             row[COL_N], (s)->grad_scale, (s)->lerp_weight,                   \
                             (s)->lerp_complement, (s)->lerp_from_start, (s)->beta2,          \
                             (s)->one_minus_beta2, (s)->bias_correction2_sqrt, (s)->eps,      \
                             (s)->neg_step_size, (s)->weight_decay, (s)->decay_factor,        \
                             (s)->weight_decay_mode, (s)->amsgrad, (s)->maximize);            \
        }

#define MULTI_ADAM(SUFFIX, T)                                                                 \
    struct multi_adam_args_##SUFFIX {                                                         \
        const int64_t *rows; const int64_t *bounds; int64_t blocks;                           \
        T grad_scale; T lerp_weight; T lerp_complement; int lerp_from_start; T beta2;         \
        T one_minus_beta2; T bias_correction2_sqrt; T eps; T neg_step_size; T weight_decay;   \
        T decay_factor; int weight_decay_mode; int amsgrad; int maximize;                     \
    };                                                                                        \
    static void multi_adam_task_##SUFFIX(void *args, int64_t lo, int64_t hi)                  \
    {                                                                                         \
        const struct multi_adam_args_##SUFFIX *s = args;                                      \
        ADAM_ROWS(SUFFIX, T, s)                                                               \
    }                                                                                         \
    void fo_multi_adam_##SUFFIX(const int64_t *rows, const int64_t *bounds, int64_t blocks,   \
                                T grad_scale, T lerp_weight, T lerp_complement, int lerp_from_start,        \
                                T beta2, T one_minus_beta2, T bias_correction2_sqrt, T eps,   \
                                T neg_step_size, T weight_decay, T decay_factor,              \
                                int weight_decay_mode, int amsgrad, int maximize)             \
    {                                                                                         \
        struct multi_adam_args_##SUFFIX a = {rows, bounds, blocks, grad_scale, lerp_weight,   \
                                             lerp_complement, lerp_from_start, beta2,         \
                                             one_minus_beta2, bias_correction2_sqrt, eps,     \
                                             neg_step_size, weight_decay, decay_factor,       \
                                             weight_decay_mode, amsgrad, maximize};           \
        fo_pool_run(multi_adam_task_##SUFFIX, &a, blocks, 1, fo_multi_threads());             \
    }

MULTI_SGD(f32, float)
MULTI_SGD(f64, double)
MULTI_ADAM(f32, float)
MULTI_ADAM(f64, double)
