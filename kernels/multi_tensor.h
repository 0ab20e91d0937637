/* fastoptim multi-tensor kernels: one call walks a table of rows (one per tensor) and
 * runs the single-array kernel of fastoptim.h on each, with one set of scalars.
 *
 * The table is int64, row-major, fo_multi_table_ncol() columns per row (the layout of
 * fastoptim/backends/_multi_table.py: N, DTYPE, PARAM, GRAD, three STATE addresses,
 * STEP). The rows bounds[b] <= r < bounds[b + 1] of each block b < blocks are updated,
 * as the chunks of one call of fastoptim's pool (pool.h) when blocks > 1; a row with N <= 0 is skipped. Every row of
 * one call has the kernel's precision and is small (below the parallel crossover); the caller (fastoptim._plain_list) has checked every
 * address, length, dtype and overlap (_multi_table.fill) before the call.
 */
#include <stdint.h>

int fo_multi_table_ncol(void);

void fo_multi_sgd_f32(const int64_t *rows, const int64_t *bounds, int64_t blocks,
                      float grad_scale, float neg_lr, float weight_decay, float momentum,
                      float one_minus_dampening, int has_weight_decay, int has_momentum,
                      int first_step, int nesterov, int maximize);
void fo_multi_sgd_f64(const int64_t *rows, const int64_t *bounds, int64_t blocks,
                      double grad_scale, double neg_lr, double weight_decay, double momentum,
                      double one_minus_dampening, int has_weight_decay, int has_momentum,
                      int first_step, int nesterov, int maximize);

void fo_multi_adam_f32(const int64_t *rows, const int64_t *bounds, int64_t blocks, float grad_scale,
                       float lerp_weight, float lerp_complement, int lerp_from_start,
                       float beta2, float one_minus_beta2, float bias_correction2_sqrt, float eps,
                       float neg_step_size, float weight_decay, float decay_factor,
                       int weight_decay_mode, int amsgrad, int maximize);
void fo_multi_adam_f64(const int64_t *rows, const int64_t *bounds, int64_t blocks, double grad_scale,
                       double lerp_weight, double lerp_complement, int lerp_from_start,
                       double beta2, double one_minus_beta2, double bias_correction2_sqrt,
                       double eps, double neg_step_size, double weight_decay, double decay_factor,
                       int weight_decay_mode, int amsgrad, int maximize);
