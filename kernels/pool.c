/* fastoptim's thread pool: see pool.h. Linux (futex); elsewhere every call runs on the
 * calling thread. */
#define _GNU_SOURCE
#include <stdint.h>
#include "fo_constants.h" /* generated from fastoptim/backends/_constants.py */
#include "pool.h"

#if defined(__linux__) && defined(__GNUC__)
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define FO_PAUSE() _mm_pause()
#else
#define FO_PAUSE() ((void)0)
#endif

#define FO_POOL_MAX_WORKERS 255

/* One job at a time. `next` packs the job's generation (high 32 bits) with the index of
 * the next unclaimed chunk (low 32 bits): a worker claims a chunk with a compare-and-swap
 * on the whole word, so a worker that wakes late, after its job has ended, can never
 * claim a chunk of the next one under the old job's description. The job's fields are
 * written before `next` publishes it. When every chunk is done the caller first closes the
 * job (the chunk index set to 0xffffffff, which no job reaches), and only then rewrites the
 * fields for the next one: a worker's compare-and-swap against a word it read before the
 * close fails, so it never claims a chunk under a description it did not read whole.
 * (The generation is 32 bits: a stale word could match again only for a worker stalled
 * between its load and its compare-and-swap for exactly 2^32 jobs.) */
static struct {
    _Atomic uint32_t seq;      /* bumped to wake the workers; they futex-wait on it */
    _Atomic uint64_t next;     /* generation << 32 | next chunk */
    _Atomic int64_t done;      /* chunks finished in the current job */
    _Atomic int sleepers;      /* workers in futex_wait (a wake costs a syscall only then) */
    _Atomic int job_threads;   /* threads the current job may use, the caller included */
    _Atomic int64_t spin_ns;
    fo_pool_task task;
    void *context;
    int64_t n, chunk;
    _Atomic int64_t chunks;    /* read by a worker before it claims; see fo_pool_run */
    uint32_t generation;
    int started;               /* workers created; worker k helps a job of more than k threads */
    int64_t caller_chunks;
    int adaptive;              /* 1: stop waking workers that have not been helping */
    int streak;                /* calls in a row on which no worker shared the work */
    int skip_left;             /* calls still to run on the caller alone before a probe */
    int64_t skipped;           /* calls run alone because the workers were not helping */
    pthread_t threads[FO_POOL_MAX_WORKERS];
    pthread_mutex_t busy;      /* held by the caller of the running job */
} P = { .next = 0xffffffffu, .job_threads = 1, .adaptive = 1, .spin_ns = FO_POOL_SPIN_NS, .busy = PTHREAD_MUTEX_INITIALIZER };

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void futex_wait(_Atomic uint32_t *word, uint32_t value)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static inline void run_chunk(int64_t index)
{
    const int64_t lo = index * P.chunk;
    const int64_t hi = lo + P.chunk < P.n ? lo + P.chunk : P.n;
    P.task(P.context, lo, hi);
    atomic_fetch_add_explicit(&P.done, 1, memory_order_release);
}

/* Worker `index`'s share of the current job: claim chunks until none is left. The
 * thread limit is read after each load of `next`: a job's limit is stored before the job
 * is published, so a worker never helps a later job that allows fewer threads. */
static void help(int index)
{
    for (;;) {
        uint64_t word = atomic_load(&P.next);
        if ((int64_t)(uint32_t)word >= atomic_load(&P.chunks) ||
            index >= atomic_load(&P.job_threads))
            return; /* closed, every chunk claimed (a stale read only stops it early), or
                     * a job with fewer threads */
        if (atomic_compare_exchange_weak(&P.next, &word, word + 1))
            run_chunk((uint32_t)word);  /* the job cannot end before this chunk is done */
    }
}

static void *worker(void *arg)
{
    const int index = (int)(intptr_t)arg; /* 1, 2, ...: the caller is thread 0 */
    uint32_t seen = atomic_load(&P.seq);
    for (;;) {
        int64_t until = now_ns() + atomic_load_explicit(&P.spin_ns, memory_order_relaxed);
        uint32_t now;
        /* Wait for the next job: a short spin that yields the core to any other runnable
         * thread (BLAS's workers, right after a step), then sleep in the kernel. */
        while ((now = atomic_load_explicit(&P.seq, memory_order_acquire)) == seen) {
            if (now_ns() >= until) {
                atomic_fetch_add(&P.sleepers, 1);
                futex_wait(&P.seq, seen); /* returns at once if seq moved on meanwhile */
                atomic_fetch_sub(&P.sleepers, 1);
                until = now_ns() + atomic_load_explicit(&P.spin_ns, memory_order_relaxed);
            } else {
                sched_yield();
            }
        }
        seen = now;
        help(index);
    }
    return NULL;
}

static void kick(void)
{
    atomic_fetch_add(&P.seq, 1);
    if (atomic_load(&P.sleepers) > 0)
        futex_wake_all(&P.seq);
}

/* A forked child has only the thread that forked: it starts its own workers when needed. */
static void after_fork_in_child(void)
{
    P.started = 0;
    atomic_store(&P.sleepers, 0);
    atomic_store(&P.next, (uint64_t)P.generation << 32 | 0xffffffffu);
    const pthread_mutex_t unlocked = PTHREAD_MUTEX_INITIALIZER; /* a parent's holder is gone */
    memcpy(&P.busy, &unlocked, sizeof unlocked);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;
static void register_fork_handler(void) { pthread_atfork(NULL, NULL, after_fork_in_child); }

/* Called with P.busy held. Returns the number of workers running. */
static int start_workers(int wanted)
{
    while (P.started < wanted - 1 && P.started < FO_POOL_MAX_WORKERS) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        int failed = pthread_create(&P.threads[P.started], &attr, worker,
                                    (void *)(intptr_t)(P.started + 1));
        pthread_attr_destroy(&attr);
        if (failed)
            break; /* no more threads: fewer helpers, never an error */
        pthread_detach(P.threads[P.started]);
        P.started++;
    }
    return P.started;
}

void fo_pool_run(fo_pool_task task, void *context, int64_t n, int64_t chunk, int threads)
{
    if (n <= 0)
        return;
    const int wanted = threads > FO_POOL_MAX_WORKERS + 1 ? FO_POOL_MAX_WORKERS + 1 : threads;
    pthread_once(&once, register_fork_handler); /* before the lock can be held: see fork */
    if (chunk <= 0 || chunk >= n || wanted <= 1 || (n - 1) / chunk + 1 > 0x7fffffffLL ||
        pthread_mutex_trylock(&P.busy) != 0) {
        task(context, 0, n); /* one chunk, one thread, or the pool busy with another caller */
        return;
    }
    if (P.skip_left > 0) { /* the workers were not getting a share: this call runs alone */
        P.skip_left--;
        P.skipped++;
        pthread_mutex_unlock(&P.busy);
        task(context, 0, n);
        return;
    }
    if (start_workers(wanted) == 0) {
        pthread_mutex_unlock(&P.busy);
        task(context, 0, n);
        return;
    }
    atomic_store(&P.job_threads, wanted);
    P.task = task;
    P.context = context;
    P.n = n;
    P.chunk = chunk;
    atomic_store(&P.chunks, (n - 1) / chunk + 1);
    atomic_store(&P.done, 0);
    P.generation++;
    atomic_store(&P.next, (uint64_t)P.generation << 32);
    kick();
    int64_t mine = 0;
    for (;;) {
        uint64_t word = atomic_fetch_add(&P.next, 1);
        if ((int64_t)(uint32_t)word >= P.chunks)
            break;
        run_chunk((uint32_t)word);
        mine++;
    }
    /* only chunks a worker has claimed are left: wait for those to finish */
    unsigned spins = 0;
    while (atomic_load_explicit(&P.done, memory_order_acquire) < P.chunks) {
        FO_PAUSE(); /* a chunk takes microseconds; a worker preempted mid-chunk gets the core */
        if (++spins >= 1024)
            sched_yield();
    }
    atomic_store(&P.next, (uint64_t)P.generation << 32 | 0xffffffffu); /* closed */
    P.caller_chunks = mine;
    /* No share for the caller or none for the workers: the other cores were busy (BLAS's
     * threads hold them after a matmul) and waking a worker only cost time. After
     * FO_POOL_STREAK such calls in a row, the next FO_POOL_SKIP calls run on the caller
     * alone; then one call wakes the workers again to see whether they are free now. */
    if (P.adaptive && (mine == 0 || mine == atomic_load(&P.chunks))) {
        if (++P.streak >= FO_POOL_STREAK) {
            P.streak = 0;
            P.skip_left = FO_POOL_SKIP;
        }
    } else {
        P.streak = 0;
    }
    pthread_mutex_unlock(&P.busy);
}

void fo_pool_set_spin_ns(int64_t spin_ns)
{
    const int64_t most = 1000000000LL; /* 1 s: now_ns() + spin_ns cannot overflow */
    atomic_store(&P.spin_ns, spin_ns < 0 ? 0 : spin_ns > most ? most : spin_ns);
}
int64_t fo_pool_spin_ns(void) { return atomic_load(&P.spin_ns); }
int fo_pool_workers_started(void) { return P.started; }
int64_t fo_pool_last_caller_chunks(void) { return P.caller_chunks; }
void fo_pool_set_adaptive(int on)
{
    pthread_mutex_lock(&P.busy);
    P.adaptive = on != 0;
    P.streak = P.skip_left = 0;
    pthread_mutex_unlock(&P.busy);
}
int64_t fo_pool_skipped_calls(void) { return P.skipped; }

#else /* no futex: every call runs on the caller */

static int64_t fo_pool_spin = FO_POOL_SPIN_NS;
void fo_pool_run(fo_pool_task task, void *context, int64_t n, int64_t chunk, int threads)
{
    (void)chunk;
    (void)threads;
    if (n > 0)
        task(context, 0, n);
}
void fo_pool_set_spin_ns(int64_t spin_ns) { fo_pool_spin = spin_ns; }
int64_t fo_pool_spin_ns(void) { return fo_pool_spin; }
int fo_pool_workers_started(void) { return 0; }
int64_t fo_pool_last_caller_chunks(void) { return 0; }
void fo_pool_set_adaptive(int on) { (void)on; }
int64_t fo_pool_skipped_calls(void) { return 0; }
#endif
