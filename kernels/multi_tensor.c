/* Multi-tensor kernels (see multi_tensor.h): a loop over the table's rows that calls the
 * single-array kernels of fastoptim.c on each row, so the per-element math and the
 * vectorized code are exactly those of one call per tensor, without one Python call per
 * tensor. The rows are small (the caller runs big tensors through the parallel
 * single-array kernels), so each runs serially; the blocks run one per thread. */
#include <stdint.h>
#include "fo_constants.h" /* generated from fastoptim/backends/_constants.py */
#include "fastoptim.h"
#include "multi_tensor.h"

/* the table's columns (fastoptim/backends/_multi_table.py) */
enum { COL_N = FO_COL_N, COL_PARAM = FO_COL_PARAM, COL_GRAD = FO_COL_GRAD,
       COL_STATE0 = FO_COL_STATE0, NCOL = FO_NCOL };

int fo_multi_table_ncol(void) { return NCOL; }

#define ADDRESS(T, row, col) ((T *)(uintptr_t)(row)[col])

#define MULTI_SGD(SUFFIX, T)                                                                  \
    void fo_multi_sgd_##SUFFIX(const int64_t *rows, const int64_t *bounds, int64_t blocks,    \
                               T grad_scale, T neg_lr, T weight_decay, T momentum,            \
                               T one_minus_dampening,                                         \
                               int has_weight_decay, int has_momentum, int first_step,        \
                               int nesterov, int maximize)                                    \
    {                                                                                         \
        _Pragma("omp parallel for schedule(static, 1) num_threads(blocks) if(blocks > 1)")   \
        for (int64_t b = 0; b < blocks; b++)                                                  \
        for (int64_t r = bounds[b]; r < bounds[b + 1]; r++) {                                 \
            const int64_t *row = rows + r * NCOL;                                             \
            if (row[COL_N] <= 0) continue;                                                    \
            fo_sgd_##SUFFIX(ADDRESS(T, row, COL_PARAM), ADDRESS(T, row, COL_GRAD),            \
                            has_momentum ? ADDRESS(T, row, COL_STATE0) : (T *)0, row[COL_N],  \
                            grad_scale, neg_lr, weight_decay, momentum, one_minus_dampening,  \
                            has_weight_decay, has_momentum, first_step, nesterov, maximize);  \
        }                                                                                     \
    }

#define MULTI_ADAM(SUFFIX, T)                                                                 \
    void fo_multi_adam_##SUFFIX(const int64_t *rows, const int64_t *bounds, int64_t blocks,   \
                                T grad_scale, T lerp_weight, T lerp_complement, int lerp_from_start,        \
                                T beta2, T one_minus_beta2, T bias_correction2_sqrt, T eps,   \
                                T neg_step_size, T weight_decay, T decay_factor,              \
                                int weight_decay_mode, int amsgrad, int maximize)             \
    {                                                                                         \
        _Pragma("omp parallel for schedule(static, 1) num_threads(blocks) if(blocks > 1)")   \
        for (int64_t b = 0; b < blocks; b++)                                                  \
        for (int64_t r = bounds[b]; r < bounds[b + 1]; r++) {                                 \
            const int64_t *row = rows + r * NCOL;                                             \
            if (row[COL_N] <= 0) continue;                                                    \
            fo_adam_##SUFFIX(ADDRESS(T, row, COL_PARAM), ADDRESS(T, row, COL_GRAD),           \
                             ADDRESS(T, row, COL_STATE0), ADDRESS(T, row, COL_STATE0 + 1),    \
                             amsgrad ? ADDRESS(T, row, COL_STATE0 + 2) : (T *)0, row[COL_N],  \
                             grad_scale, lerp_weight, lerp_complement, lerp_from_start,       \
                             beta2, one_minus_beta2, bias_correction2_sqrt, eps,              \
                             neg_step_size, weight_decay, decay_factor, weight_decay_mode,    \
                             amsgrad, maximize);                                              \
        }                                                                                     \
    }

MULTI_SGD(f32, float)
MULTI_SGD(f64, double)
MULTI_ADAM(f32, float)
MULTI_ADAM(f64, double)
