/* check_writer.c: the writer thread (stream/writer.c).
 *
 * The jobs themselves are the witnesses: each records when it ran, what it
 * saw, and is counted when freed, so the checks below do not trust the
 * writer's own statistics (they are checked too, against these counts).
 * Holding a job on a gate makes the queue contents deterministic where a
 * test needs them (error, blocked submit); timing checks use generous
 * named tolerances. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tests/util.h"
#include "stream/writer.h"


/* ---- helpers -------------------------------------------------------------- */

static void nap_us(long us)
{
    struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
    while (nanosleep(&ts, &ts) != 0) {}
}

/* A door a job waits at until the test opens it. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int open;
} gate;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = 0;
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_pass(gate *g)
{
    pthread_mutex_lock(&g->mu);
    while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

static void gate_destroy(gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

/* Counts every arg freed (the writer must free each submitted arg once). */
static atomic_int n_freed;

/* One job's arg: what it is, and where it reports. */
typedef struct tjob {
    int idx;
    int producer;
    long sleep_us;         /* time the job takes */
    gate *wait;            /* not NULL: pass it first */
    fs_status fail;        /* returned (with a message when msg) */
    int msg;
    struct tlog *log;
} tjob;

#define MAX_LOG 20000

/* Written by jobs (on the writer thread only), read by the test after a
 * flush (the writer's mutex orders the two). */
typedef struct tlog {
    int n;
    int idx[MAX_LOG];
    int producer[MAX_LOG];
} tlog;

static int freed(void)
{
    return atomic_load(&n_freed);
}

static void tjob_free(void *arg)
{
    atomic_fetch_add(&n_freed, 1);
    free(arg);
}

static fs_status tjob_run(fs_ctx *ctx, void *arg)
{
    tjob *j = arg;
    if (j->wait) gate_pass(j->wait);
    if (j->sleep_us) nap_us(j->sleep_us);
    if (j->log && j->log->n < MAX_LOG) {
        j->log->idx[j->log->n] = j->idx;
        j->log->producer[j->log->n] = j->producer;
        j->log->n++;
    }
    if (j->fail != FS_OK) {
        if (j->msg) return fs_ctx_err(ctx, j->fail, "disk full writing job %d", j->idx);
        return j->fail;
    }
    return FS_OK;
}

static tjob *tjob_new(int idx, tlog *log)
{
    tjob *j = calloc(1, sizeof *j);
    ck_assert(j != NULL);
    j->idx = idx;
    j->log = log;
    return j;
}

static fs_writer *writer_new(fs_ctx *ctx, uint64_t limit)
{
    fs_writer *w = NULL;
    fs_ctx_init(ctx);
    ck_assert_int_eq(fs_writer_new(ctx, limit, &w), FS_OK);
    ck_assert(w != NULL);
    atomic_store(&n_freed, 0);
    return w;
}

/* ---- FIFO ----------------------------------------------------------------- */

#define FIFO_JOBS 1000

START_TEST(test_fifo)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, 1u << 20);
    static tlog log;
    memset(&log, 0, sizeof log);
    uint64_t bytes = 0;
    for (int i = 0; i < FIFO_JOBS; i++) {
        tjob *j = tjob_new(i, &log);
        if (i % 97 == 0) j->sleep_us = 200;   /* let the queue build up now and then */
        ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, j, tjob_free, (uint64_t)(i % 7) + 1), FS_OK);
        bytes += (uint64_t)(i % 7) + 1;
    }
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_OK);
    ck_assert_int_eq(log.n, FIFO_JOBS);
    for (int i = 0; i < FIFO_JOBS; i++) ck_assert_int_eq(log.idx[i], i);
    ck_assert_int_eq(freed(), FIFO_JOBS);
    fs_writer_stats st;
    fs_writer_get_stats(w, &st);
    ck_assert_uint_eq(st.jobs, FIFO_JOBS);
    ck_assert_uint_eq(st.dropped, 0);
    ck_assert_uint_eq(st.bytes, bytes);
    ck_assert(st.busy_s > 0);
    /* flush on an idle writer returns at once */
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_OK);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);
    ck_assert_int_eq(ctx.err, FS_OK);
}
END_TEST

/* ---- the job's context ------------------------------------------------------ */

typedef struct ctxjob {
    const fs_ctx *caller;
    int seen_err;          /* ctx->err on entry */
    int seen_quiet;
    int other;             /* ctx is not the caller's */
    int dirty;             /* leave an error in ctx but return FS_OK */
} ctxjob;

static fs_status ctxjob_run(fs_ctx *ctx, void *arg)
{
    ctxjob *c = arg;
    c->seen_err = ctx->err;
    c->seen_quiet = ctx->quiet;
    c->other = ctx != c->caller;
    if (c->dirty) fs_ctx_err(ctx, FS_ERR_IO, "handled by the job");
    return FS_OK;
}

START_TEST(test_job_ctx)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_writer *w = NULL;
    ck_assert_int_eq(fs_writer_new(&ctx, 100, &w), FS_OK);
    ctxjob a = { &ctx, -1, -1, 0, 1 }, b = { &ctx, -1, -1, 0, 0 };
    ck_assert_int_eq(fs_writer_submit(&ctx, w, ctxjob_run, &a, NULL, 1), FS_OK);
    ck_assert_int_eq(fs_writer_submit(&ctx, w, ctxjob_run, &b, NULL, 1), FS_OK);
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_OK);
    ck_assert_int_eq(a.other, 1);
    ck_assert_int_eq(a.seen_err, FS_OK);
    ck_assert_int_eq(a.seen_quiet, 1);
    /* a's leftover error was cleared before b and did not stick */
    ck_assert_int_eq(b.seen_err, FS_OK);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);
    ck_assert_int_eq(ctx.err, FS_OK);
}
END_TEST

/* ---- back-pressure ---------------------------------------------------------- */

#define SLOW_US 100000          /* the slow job */
#define SLOW_TOL 0.5            /* submit must wait at least this share of it
                                   (the job may have started before submit) */

START_TEST(test_backpressure_slow)
{
    fs_ctx ctx;
    const uint64_t L = 100;
    fs_writer *w = writer_new(&ctx, L);
    tjob *slow = tjob_new(0, NULL);
    slow->sleep_us = SLOW_US;
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, slow, tjob_free, L), FS_OK);
    double t0 = fs_now();
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, tjob_new(1, NULL), tjob_free, 1), FS_OK);
    double waited = fs_now() - t0;
    ck_assert_msg(waited >= SLOW_TOL * SLOW_US * 1e-6, "submit waited %.3f s only", waited);
    ck_assert_int_ge(freed(), 1);   /* it waited for the slow job's end (job 1 may be done too) */

    /* a job over the limit waits for an empty writer, then is accepted */
    tjob *slow2 = tjob_new(2, NULL);
    slow2->sleep_us = SLOW_US / 4;
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, slow2, tjob_free, 10), FS_OK);
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, tjob_new(3, NULL), tjob_free, 10 * L), FS_OK);
    ck_assert_int_ge(freed(), 3);
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_OK);
    ck_assert_int_eq(freed(), 4);

    fs_writer_stats st;
    fs_writer_get_stats(w, &st);
    ck_assert_uint_ge(st.blocked, 2);
    ck_assert(st.blocked_s >= SLOW_TOL * SLOW_US * 1e-6);
    ck_assert_uint_eq(st.max_pending, 10 * L);    /* the big one, alone */
    ck_assert_uint_eq(st.bytes, L + 1 + 10 + 10 * L);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);
}
END_TEST

/* The bound, checked by the jobs.  While job k runs it is still pending
 * (bytes are released after its free), and so are all the jobs after it
 * that were accepted, among which every job whose submit has returned: the
 * sum of their sizes may not exceed the limit. */
#define BP_JOBS 3000
#define BP_LIMIT 1000

static struct {
    uint64_t size[BP_JOBS];
    atomic_int returned;       /* submits returned */
    atomic_int violations;
    atomic_ullong max_seen;
} bp;

static fs_status bp_run(fs_ctx *ctx, void *arg)
{
    (void)ctx;
    int k = (int)(intptr_t)arg;
    if (k % 5 == 0) nap_us(50);
    int r = atomic_load(&bp.returned);
    uint64_t sum = 0;
    for (int i = k; i < r; i++) sum += bp.size[i];
    if (sum > BP_LIMIT) atomic_fetch_add(&bp.violations, 1);   /* sizes are <= 400 < limit */
    unsigned long long m = atomic_load(&bp.max_seen);
    while (sum > m && !atomic_compare_exchange_weak(&bp.max_seen, &m, sum)) {}
    return FS_OK;
}

static void bp_free(void *arg)
{
    (void)arg;
    atomic_fetch_add(&n_freed, 1);
}

START_TEST(test_backpressure_bound)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, BP_LIMIT);
    t_rng r = { 7 };
    for (int i = 0; i < BP_JOBS; i++) bp.size[i] = 1 + t_next(&r) % 400;
    atomic_store(&bp.returned, 0);
    atomic_store(&bp.violations, 0);
    atomic_store(&bp.max_seen, 0);
    for (int i = 0; i < BP_JOBS; i++) {
        ck_assert_int_eq(fs_writer_submit(&ctx, w, bp_run, (void *)(intptr_t)i, bp_free, bp.size[i]), FS_OK);
        atomic_store(&bp.returned, i + 1);
    }
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_OK);
    int violations = atomic_load(&bp.violations);
    uint64_t max_seen = atomic_load(&bp.max_seen);
    ck_assert_int_eq(violations, 0);
    /* the producer did run ahead of the writer, up to near the limit */
    ck_assert_uint_gt(max_seen, BP_LIMIT / 2);
    fs_writer_stats st;
    fs_writer_get_stats(w, &st);
    ck_assert_uint_le(st.max_pending, BP_LIMIT);
    ck_assert_uint_gt(st.blocked, 0);
    ck_assert_int_eq(freed(), BP_JOBS);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);
}
END_TEST

/* Callers are served in call order: a small job that would fit does not
 * overtake a big one submitted before it and still waiting for room. */
typedef struct side_submit {
    fs_writer *w;
    tjob *j;
    uint64_t bytes;
    fs_status st;
} side_submit;

static void *side_run(void *arg)
{
    side_submit *s = arg;
    fs_ctx c;
    fs_ctx_init(&c);
    s->st = fs_writer_submit(&c, s->w, tjob_run, s->j, tjob_free, s->bytes);
    return NULL;
}

#define ORDER_GAP_US 30000   /* lets the first side thread take its turn first */

START_TEST(test_call_order)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, 10);
    static tlog log;
    memset(&log, 0, sizeof log);
    gate g;
    gate_init(&g);
    tjob *j0 = tjob_new(0, &log);
    j0->wait = &g;
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, j0, tjob_free, 5), FS_OK);
    side_submit a = { w, tjob_new(1, &log), 10, -1 }, b = { w, tjob_new(2, &log), 1, -1 };
    pthread_t ta, tb;
    ck_assert_int_eq(pthread_create(&ta, NULL, side_run, &a), 0);
    nap_us(ORDER_GAP_US);
    ck_assert_int_eq(pthread_create(&tb, NULL, side_run, &b), 0);   /* 5 + 1 <= 10 would fit */
    nap_us(ORDER_GAP_US);
    ck_assert_int_eq(freed(), 0);
    gate_open(&g);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_int_eq(a.st, FS_OK);
    ck_assert_int_eq(b.st, FS_OK);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);
    ck_assert_int_eq(log.n, 3);
    for (int i = 0; i < 3; i++) ck_assert_int_eq(log.idx[i], i);
    gate_destroy(&g);
}
END_TEST

/* ---- errors ----------------------------------------------------------------- */

#define ERR_JOBS 10
#define ERR_AT 5

START_TEST(test_error_sticky)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, 1u << 20);
    static tlog log;
    memset(&log, 0, sizeof log);
    gate g;
    gate_init(&g);
    for (int i = 0; i < ERR_JOBS; i++) {
        tjob *j = tjob_new(i, &log);
        if (i == 0) j->wait = &g;            /* everything is queued before the failure */
        if (i == ERR_AT) {
            j->fail = FS_ERR_IO;
            j->msg = 1;
        }
        ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, j, tjob_free, 8), FS_OK);
    }
    gate_open(&g);
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_ERR_IO);
    ck_assert_int_eq(ctx.err, FS_ERR_IO);
    ck_assert_str_eq(ctx.errmsg, "disk full writing job 5");
    ck_assert_int_eq(log.n, ERR_AT + 1);     /* 0..5 ran, 6..9 dropped */
    for (int i = 0; i < log.n; i++) ck_assert_int_eq(log.idx[i], i);
    ck_assert_int_eq(freed(), ERR_JOBS);
    fs_writer_stats st;
    fs_writer_get_stats(w, &st);
    ck_assert_uint_eq(st.jobs, ERR_AT + 1);
    ck_assert_uint_eq(st.dropped, ERR_JOBS - ERR_AT - 1);

    /* later submits are refused with the same error, and their arg freed */
    fs_ctx c2;
    fs_ctx_init(&c2);
    ck_assert_int_eq(fs_writer_submit(&c2, w, tjob_run, tjob_new(99, &log), tjob_free, 8), FS_ERR_IO);
    ck_assert_str_eq(c2.errmsg, "disk full writing job 5");
    ck_assert_int_eq(freed(), ERR_JOBS + 1);
    ck_assert_int_eq(log.n, ERR_AT + 1);
    fs_ctx c3;
    fs_ctx_init(&c3);
    ck_assert_int_eq(fs_writer_flush(&c3, w), FS_ERR_IO);
    ck_assert_str_eq(c3.errmsg, "disk full writing job 5");
    fs_ctx c4;
    fs_ctx_init(&c4);
    ck_assert_int_eq(fs_writer_free(&c4, w), FS_ERR_IO);
    ck_assert_str_eq(c4.errmsg, "disk full writing job 5");
    gate_destroy(&g);
}
END_TEST

START_TEST(test_error_no_message)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, 100);
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, tjob_new(0, NULL), tjob_free, 1), FS_OK);
    tjob *j = tjob_new(1, NULL);
    j->fail = FS_ERR_NUMERIC;               /* no fs_ctx_err: the writer names it */
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, j, tjob_free, 1), FS_OK);
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_ERR_NUMERIC);
    ck_assert_msg(strstr(ctx.errmsg, "job 1") != NULL, "message: %s", ctx.errmsg);
    ck_assert_msg(strstr(ctx.errmsg, fs_status_str(FS_ERR_NUMERIC)) != NULL, "message: %s", ctx.errmsg);
    /* ctx NULL on a cleanup path: the status alone */
    ck_assert_int_eq(fs_writer_free(NULL, w), FS_ERR_NUMERIC);
    ck_assert_int_eq(freed(), 2);
}
END_TEST

/* A submit blocked for room is woken by the error and refuses its job. */
typedef struct blocked_arg {
    fs_writer *w;
    fs_status st;
    char msg[sizeof ((fs_ctx *)0)->errmsg];
} blocked_arg;

static void *blocked_submit(void *arg)
{
    blocked_arg *b = arg;
    fs_ctx c;
    fs_ctx_init(&c);
    b->st = fs_writer_submit(&c, b->w, tjob_run, tjob_new(1, NULL), tjob_free, 10);
    snprintf(b->msg, sizeof b->msg, "%s", c.errmsg);
    return NULL;
}

#define BLOCKED_WAIT_US 50000   /* time for the submitter to block */

START_TEST(test_error_wakes_submit)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, 10);
    gate g;
    gate_init(&g);
    tjob *j = tjob_new(0, NULL);
    j->wait = &g;
    j->fail = FS_ERR_IO;
    j->msg = 1;
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, j, tjob_free, 10), FS_OK);
    blocked_arg b = { w, FS_OK, "" };
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, blocked_submit, &b), 0);
    nap_us(BLOCKED_WAIT_US);
    fs_writer_stats st;
    fs_writer_get_stats(w, &st);
    ck_assert_uint_eq(st.jobs, 0);                /* job 0 still held at its gate */
    ck_assert_int_eq(freed(), 0);   /* the submit is still blocked */
    gate_open(&g);
    pthread_join(t, NULL);
    ck_assert_int_eq(b.st, FS_ERR_IO);
    ck_assert_str_eq(b.msg, "disk full writing job 0");
    ck_assert_int_eq(freed(), 2);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_ERR_IO);
    gate_destroy(&g);
}
END_TEST

/* ---- free ------------------------------------------------------------------- */

#define FREE_JOBS 50

START_TEST(test_free_runs_queued)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, 1u << 20);
    static tlog log;
    memset(&log, 0, sizeof log);
    for (int i = 0; i < FREE_JOBS; i++) {
        tjob *j = tjob_new(i, &log);
        j->sleep_us = 2000;                  /* ~100 ms in all: most are queued at free */
        ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, j, tjob_free, 1), FS_OK);
    }
    ck_assert_int_lt(freed(), FREE_JOBS);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);
    /* after the join the log is the thread's final word */
    ck_assert_int_eq(log.n, FREE_JOBS);
    for (int i = 0; i < FREE_JOBS; i++) ck_assert_int_eq(log.idx[i], i);
    ck_assert_int_eq(freed(), FREE_JOBS);
}
END_TEST

START_TEST(test_misuse)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_writer_free(&ctx, NULL), FS_OK);
    ck_assert_int_eq(fs_writer_free(NULL, NULL), FS_OK);
    ck_assert_int_eq(ctx.err, FS_OK);

    fs_writer *w = (fs_writer *)&ctx;        /* must be reset to NULL */
    ck_assert_int_eq(fs_writer_new(&ctx, 0, &w), FS_ERR_USAGE);
    ck_assert(w == NULL);

    w = writer_new(&ctx, 16);
    ck_assert_int_eq(fs_writer_submit(&ctx, w, NULL, tjob_new(0, NULL), tjob_free, 1), FS_ERR_USAGE);
    ck_assert_int_eq(freed(), 1);   /* refused, yet freed */
    /* a usage error of the caller does not stop the writer */
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_writer_submit(&ctx, w, tjob_run, tjob_new(1, NULL), tjob_free, 1), FS_OK);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);
    ck_assert_int_eq(freed(), 2);
}
END_TEST

/* ---- stress: two producers, a flusher inside each, a stats reader ---------- */

#define ST_PRODUCERS 2
#define ST_JOBS 10000            /* per producer */
#define ST_LIMIT 64
#define ST_FLUSH_EVERY 2500

typedef struct producer {
    fs_writer *w;
    int id;
    tlog *log;
    int failures;
} producer;

static void *produce(void *arg)
{
    producer *p = arg;
    fs_ctx c;
    fs_ctx_init(&c);
    t_rng r = { 100 + (uint64_t)p->id };
    for (int i = 0; i < ST_JOBS; i++) {
        tjob *j = calloc(1, sizeof *j);
        if (!j) {
            p->failures++;
            break;
        }
        j->idx = i;
        j->producer = p->id;
        j->log = p->log;
        if (t_next(&r) % 64 == 0) j->sleep_us = 20;
        if (fs_writer_submit(&c, p->w, tjob_run, j, tjob_free, 1 + t_next(&r) % 16) != FS_OK)
            p->failures++;
        if ((i + 1) % ST_FLUSH_EVERY == 0 && fs_writer_flush(&c, p->w) != FS_OK) p->failures++;
    }
    return NULL;
}

static atomic_int st_stop;

static void *watch(void *arg)
{
    fs_writer *w = arg;
    while (!atomic_load(&st_stop)) {
        fs_writer_stats st;
        fs_writer_get_stats(w, &st);
        nap_us(100);
    }
    return NULL;
}

START_TEST(test_stress)
{
    fs_ctx ctx;
    fs_writer *w = writer_new(&ctx, ST_LIMIT);
    static tlog log;
    memset(&log, 0, sizeof log);
    producer p[ST_PRODUCERS];
    pthread_t t[ST_PRODUCERS], wt;
    atomic_store(&st_stop, 0);
    ck_assert_int_eq(pthread_create(&wt, NULL, watch, w), 0);
    for (int i = 0; i < ST_PRODUCERS; i++) {
        p[i] = (producer){ w, i, &log, 0 };
        ck_assert_int_eq(pthread_create(&t[i], NULL, produce, &p[i]), 0);
    }
    for (int i = 0; i < ST_PRODUCERS; i++) pthread_join(t[i], NULL);
    atomic_store(&st_stop, 1);
    pthread_join(wt, NULL);
    for (int i = 0; i < ST_PRODUCERS; i++) ck_assert_int_eq(p[i].failures, 0);
    ck_assert_int_eq(fs_writer_flush(&ctx, w), FS_OK);
    fs_writer_stats st;
    fs_writer_get_stats(w, &st);
    ck_assert_int_eq(fs_writer_free(&ctx, w), FS_OK);

    ck_assert_int_eq(log.n, ST_PRODUCERS * ST_JOBS);
    ck_assert_int_eq(freed(), ST_PRODUCERS * ST_JOBS);
    int next[ST_PRODUCERS] = { 0 };
    for (int i = 0; i < log.n; i++) {           /* each producer's jobs in its order */
        int q = log.producer[i];
        ck_assert(q >= 0 && q < ST_PRODUCERS);
        ck_assert_int_eq(log.idx[i], next[q]);
        next[q]++;
    }
    ck_assert_uint_eq(st.jobs, ST_PRODUCERS * ST_JOBS);
    ck_assert_uint_le(st.max_pending, ST_LIMIT);
}
END_TEST

Suite *fs_suite_writer(void)
{
    Suite *s = suite_create("writer");
    TCase *tc;

    tc = tcase_create("fifo");
    tcase_add_test(tc, test_fifo);
    suite_add_tcase(s, tc);

    tc = tcase_create("job_ctx");
    tcase_add_test(tc, test_job_ctx);
    suite_add_tcase(s, tc);

    tc = tcase_create("backpressure");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_backpressure_slow);
    tcase_add_test(tc, test_backpressure_bound);
    tcase_add_test(tc, test_call_order);
    suite_add_tcase(s, tc);

    tc = tcase_create("error");
    tcase_add_test(tc, test_error_sticky);
    tcase_add_test(tc, test_error_no_message);
    tcase_add_test(tc, test_error_wakes_submit);
    suite_add_tcase(s, tc);

    tc = tcase_create("free");
    tcase_add_test(tc, test_free_runs_queued);
    tcase_add_test(tc, test_misuse);
    suite_add_tcase(s, tc);

    tc = tcase_create("stress");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_stress);
    suite_add_tcase(s, tc);

    return s;
}
