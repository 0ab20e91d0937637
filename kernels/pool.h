/* fastoptim's thread pool for in-cache kernels (pool.c).
 *
 * fo_pool_run(task, context, n, chunk, threads) runs task(context, lo, hi) over [0, n) in
 * chunks of `chunk` elements on up to `threads` threads, the caller included (workers are
 * started on first use and kept). The calling thread starts on the first chunk at once and claims
 * chunks until none is left; the pool's workers claim chunks too, as soon as they are
 * awake. The caller never waits for a worker that has not started a chunk, only for the
 * chunks already started, so a call is never much slower than the serial loop, even
 * when every other core is busy (with BLAS's threads, between the steps of a training
 * loop). After a call a worker waits for fo_pool_set_spin_ns nanoseconds in a loop that
 * yields its core to any other runnable thread (sched_yield: BLAS's workers come first),
 * so the next tensor of the same step finds it awake, then sleeps in the kernel (a
 * futex): no worker holds a core between steps.
 *
 * threads <= 1, chunk >= n, or a call made while another thread runs one: the whole range
 * runs on the caller. A forked child starts workers of its own when it first needs them.
 */
#include <stdint.h>

/* task(context, lo, hi) updates elements lo <= i < hi */
typedef void (*fo_pool_task)(void *context, int64_t lo, int64_t hi);
void fo_pool_run(fo_pool_task task, void *context, int64_t n, int64_t chunk, int threads);
void fo_pool_set_spin_ns(int64_t spin_ns);
int64_t fo_pool_spin_ns(void);
int fo_pool_workers_started(void);
/* for tests: how many chunks the caller itself ran in the last call on this pool */
int64_t fo_pool_last_caller_chunks(void);
/* On (the default): after FO_POOL_STREAK calls in a row on which the caller or the workers
 * ran every chunk (the other cores were busy), the next FO_POOL_SKIP calls run on the
 * caller alone, without waking anyone; then a call probes the workers again. */
void fo_pool_set_adaptive(int on);
int64_t fo_pool_skipped_calls(void);
