/* fastoptim C kernels: one fused pass over memory per optimizer step.
 *
 * Every array is contiguous, of length n, in the parameter's precision.
 * Scalars that do not vary per element (bias corrections, step size) are
 * computed once by the caller (fastoptim/backends/_scalars.py) and passed
 * in already rounded to the parameter's precision, as torch does.
 * grad_scale multiplies every gradient first (gradient clipping; 1 = off).
 * Flags are ints (0/1) passed at run time. The argument order is defined once, by
 * fastoptim/backends/_scalars.py (arrays, n, the fields of SGDScalars / AdamScalars, then
 * SGD_FLAGS / ADAM_FLAGS); tests/test_abi.py checks these declarations against it.
 * The arrays passed to one call must not overlap.
 */
#include <stdint.h>

void fo_sgd_f32(float *param, const float *grad, float *momentum_buffer, int64_t n,
                float grad_scale, float neg_lr, float weight_decay, float momentum, float one_minus_dampening,
                int has_weight_decay, int has_momentum, int first_step, int nesterov, int maximize);
void fo_sgd_f64(double *param, const double *grad, double *momentum_buffer, int64_t n,
                double grad_scale, double neg_lr, double weight_decay, double momentum, double one_minus_dampening,
                int has_weight_decay, int has_momentum, int first_step, int nesterov, int maximize);

void fo_adam_f32(float *param, const float *grad, float *exp_avg, float *exp_avg_sq,
                 float *max_exp_avg_sq, int64_t n, float grad_scale,
                 float lerp_weight, float lerp_complement, int lerp_from_start,
                 float beta2, float one_minus_beta2, float bias_correction2_sqrt, float eps,
                 float neg_step_size, float weight_decay, float decay_factor,
                 int weight_decay_mode, int amsgrad, int maximize);
void fo_adam_f64(double *param, const double *grad, double *exp_avg, double *exp_avg_sq,
                 double *max_exp_avg_sq, int64_t n, double grad_scale,
                 double lerp_weight, double lerp_complement, int lerp_from_start,
                 double beta2, double one_minus_beta2, double bias_correction2_sqrt, double eps,
                 double neg_step_size, double weight_decay, double decay_factor,
                 int weight_decay_mode, int amsgrad, int maximize);

int fo_openmp_max_threads(void);
/* The thread policy's thresholds (fastoptim/backends/_threads.py sets them at load). */
void fo_set_dispatch(int64_t parallel_min, int64_t blocked_max_bytes);
void fo_openmp_set_threads(int n);
