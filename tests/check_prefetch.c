/* check_prefetch.c: the io_uring prefetcher (stream/prefetch.c) against pread.
 *
 * Every byte a batch hands out is compared with a pread(2) of the same file
 * range (the independent reference); files have sizes that are not multiples
 * of 4096 and extents touch their ends.  Faults (refused O_DIRECT, -EAGAIN,
 * short reads, -EIO) come from the rig hooks of fs_prefetch_opts. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/util.h"
#include "stream/prefetch.h"

#define NFILE 4
static const uint64_t file_size[NFILE] = { 100003, 250001, 4097, 777 };
#define SLOT_BYTES (1u << 20)   /* > the sum of the aligned file sizes: any batch fits */

typedef struct fixture {
    char *dir;
    char path[NFILE][4200];
} fixture;

static void write_file(const char *path, uint64_t size, uint64_t seed)
{
    uint8_t *b = malloc(size ? size : 1);
    t_rng r = { seed };
    for (uint64_t i = 0; i < size; i++) b[i] = (uint8_t)(t_next(&r) >> 7);
    FILE *f = fopen(path, "wb");
    ck_assert_msg(f != NULL, "cannot create %s", path);
    ck_assert(fwrite(b, 1, size, f) == size);
    fclose(f);
    free(b);
}

static void fixture_make(fixture *fx)
{
    fx->dir = t_tmpdir();
    ck_assert(fx->dir != NULL);
    for (int i = 0; i < NFILE; i++) {
        snprintf(fx->path[i], sizeof fx->path[i], "%s/shard-%d.bin", fx->dir, i);
        write_file(fx->path[i], file_size[i], 1000 + (uint64_t)i);
    }
}

static void fixture_drop(fixture *fx)
{
    t_rmdir(fx->dir);
    free(fx->dir);
}

static void opts_small(fs_prefetch_opts *o, int direct)
{
    fs_prefetch_opts_default(o);
    o->slots = 3;
    o->slot_bytes = SLOT_BYTES;
    o->queue_depth = 4;
    o->direct = direct;
}

/* pread reference of [off, off + len) of path. */
static void ref_read(const char *path, uint64_t off, uint64_t len, uint8_t *dst)
{
    int fd = open(path, O_RDONLY);
    ck_assert(fd >= 0);
    uint64_t got = 0;
    while (got < len) {
        ssize_t r = pread(fd, dst + got, len - got, (off_t)(off + got));
        ck_assert_msg(r > 0, "pread %s @%llu", path, (unsigned long long)(off + got));
        got += (uint64_t)r;
    }
    close(fd);
}

/* Every extent's bytes equal pread's, and sit at the file offset's alignment. */
static void check_ptrs(const fs_extent *ext, int n, const uint8_t **ptr)
{
    for (int i = 0; i < n; i++) {
        ck_assert_msg(ptr[i] != NULL, "extent %d: NULL pointer", i);
        if (ext[i].length == 0) continue;
        ck_assert_msg((uintptr_t)ptr[i] % 4096 == ext[i].offset % 4096,
                      "extent %d: pointer not congruent to its offset", i);
        uint8_t *ref = malloc(ext[i].length);
        ref_read(ext[i].path, ext[i].offset, ext[i].length, ref);
        ck_assert_msg(memcmp(ref, ptr[i], ext[i].length) == 0,
                      "extent %d (%s @%llu +%llu) differs from pread", i, ext[i].path,
                      (unsigned long long)ext[i].offset, (unsigned long long)ext[i].length);
        free(ref);
    }
}

/* A random batch over the fixture: zero-length, EOF-adjacent, duplicate and
 * overlapping extents among plain ones. */
static int random_batch(t_rng *r, const fixture *fx, fs_extent *ext, int max)
{
    int n = 1 + (int)(t_next(r) % (uint32_t)max);
    for (int i = 0; i < n; i++) {
        int f = (int)(t_next(r) % NFILE);
        uint64_t size = file_size[f];
        uint32_t kind = t_next(r) % 10;
        fs_extent e = { fx->path[f], 0, 0 };
        if (kind == 0) {                          /* zero length, anywhere up to EOF */
            e.offset = t_next(r) % (size + 1);
        } else if (kind <= 2) {                   /* ends at EOF */
            e.length = 1 + t_next(r) % (size < 30000 ? size : 30000);
            e.offset = size - e.length;
        } else if (kind == 3 && i > 0) {          /* duplicate */
            e = ext[i - 1];
        } else if (kind == 4 && i > 0 && ext[i - 1].length > 1) {   /* overlap */
            e = ext[i - 1];
            e.offset += e.length / 2;
            e.length -= e.length / 2;             /* same end: still inside the file */
        } else {
            e.offset = t_next(r) % size;
            uint64_t room = size - e.offset;
            e.length = 1 + t_next(r) % (room < 40000 ? room : 40000);
        }
        ext[i] = e;
    }
    return n;
}

/* 40 random batches, two in flight ahead of the one being checked. */
static void run_random(int direct, uint64_t max_request, uint64_t gap, uint64_t seed)
{
    fixture fx;
    fixture_make(&fx);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_prefetch_opts o;
    opts_small(&o, direct);
    o.max_request = max_request;
    o.gap = gap;
    fs_prefetch *p;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    enum { NB = 40, MAXE = 24, AHEAD = 2 };
    static fs_extent ext[NB][MAXE];
    int n[NB], ticket[NB];
    t_rng r = { seed };
    for (int b = 0; b < NB; b++) n[b] = random_batch(&r, &fx, ext[b], MAXE);
    int sub = 0;
    for (int b = 0; b < NB; b++) {
        while (sub < NB && sub <= b + AHEAD) {
            fs_status st = fs_prefetch_submit(&ctx, p, ext[sub], n[sub], &ticket[sub]);
            ck_assert_msg(st == FS_OK, "submit %d: %s", sub, ctx.errmsg);
            sub++;
        }
        const uint8_t *ptr[MAXE];
        fs_status st = fs_prefetch_wait(&ctx, p, ticket[b], ptr);
        ck_assert_msg(st == FS_OK, "wait %d: %s", b, ctx.errmsg);
        check_ptrs(ext[b], n[b], ptr);
        fs_prefetch_release(p, ticket[b]);
    }
    fs_prefetch_stats s;
    fs_prefetch_get_stats(p, &s);
    ck_assert_int_eq((int)s.batches, NB);
    ck_assert(s.requests > 0 && s.bytes > 0);
    if (!direct) ck_assert_int_eq(s.direct, 0);
    fs_prefetch_free(p);
    fixture_drop(&fx);
}

START_TEST(random_buffered) { run_random(0, 8u << 20, 64u << 10, 1); }
END_TEST

START_TEST(random_direct) { run_random(1, 8u << 20, 64u << 10, 2); }
END_TEST

/* max_request of 4 KiB and 16 KiB: every run is split into many reads. */
START_TEST(random_split)
{
    run_random(1, 4096, 0, 3);
    run_random(0, 16384, 0, 4);
}
END_TEST

/* fs_prefetch_need is exact: spans aligned to 4096, coalesced within gap. */
START_TEST(need_exact)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_prefetch_opts o;
    fs_prefetch_opts_default(&o);
    uint64_t need = 0;
    fs_extent a[] = { { "f", 1, 65535 } };
    ck_assert_int_eq(fs_prefetch_need(&ctx, &o, a, 1, &need), FS_OK);
    ck_assert_uint_eq(need, 65536);
    fs_extent b[] = { { "f", 1, 65536 } };
    ck_assert_int_eq(fs_prefetch_need(&ctx, &o, b, 1, &need), FS_OK);
    ck_assert_uint_eq(need, 69632);
    /* 20000 apart: one run with a 64 KiB gap, two without */
    fs_extent c[] = { { "f", 20000, 100 }, { "f", 0, 100 }, { "g", 0, 0 } };
    ck_assert_int_eq(fs_prefetch_need(&ctx, &o, c, 3, &need), FS_OK);
    ck_assert_uint_eq(need, 20480);
    o.gap = 0;
    ck_assert_int_eq(fs_prefetch_need(&ctx, &o, c, 3, &need), FS_OK);
    ck_assert_uint_eq(need, 8192);
    /* same offsets, other files: never coalesced; duplicates cost nothing */
    fs_extent d[] = { { "f", 0, 10 }, { "g", 10, 10 }, { "f", 0, 10 }, { "f", 4000, 200 } };
    ck_assert_int_eq(fs_prefetch_need(&ctx, &o, d, 4, &need), FS_OK);
    ck_assert_uint_eq(need, 4096 + 8192);
    fs_extent e[] = { { NULL, 0, 1 } };
    ck_assert_int_eq(fs_prefetch_need(&ctx, &o, e, 1, &need), FS_ERR_USAGE);
    fs_ctx_clear(&ctx);
    fs_extent f[] = { { "f", UINT64_MAX - 10, 5 } };
    ck_assert_int_eq(fs_prefetch_need(&ctx, &o, f, 1, &need), FS_ERR_USAGE);
}
END_TEST

/* One extent of a whole file through 4 KiB reads; a batch of exactly one
 * slot fits, one byte more does not. */
START_TEST(split_and_fit)
{
    fixture fx;
    fixture_make(&fx);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_prefetch_opts o;
    opts_small(&o, 1);
    o.max_request = 4096;
    o.slot_bytes = 65536;
    o.slots = 2;
    fs_prefetch *p;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    fs_extent fit[] = { { fx.path[1], 1, 65535 } };
    int t;
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, fit, 1, &t), FS_OK);
    const uint8_t *ptr[1];
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t, ptr), FS_OK);
    check_ptrs(fit, 1, ptr);
    fs_prefetch_release(p, t);
    fs_prefetch_stats s;
    fs_prefetch_get_stats(p, &s);
    ck_assert_uint_ge(s.requests, 16);   /* 65536 / 4096 */

    fs_extent big[] = { { fx.path[1], 1, 65536 } };
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, big, 1, &t), FS_ERR_USAGE);
    ck_assert_msg(strstr(ctx.errmsg, "69632") != NULL, "message: %s", ctx.errmsg);
    fs_ctx_clear(&ctx);
    /* still usable; a bad ticket is a usage error */
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, fit, 1, &t), FS_OK);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t + 1000, ptr), FS_ERR_USAGE);
    fs_ctx_clear(&ctx);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t, ptr), FS_OK);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t, ptr), FS_ERR_USAGE);   /* twice */
    fs_ctx_clear(&ctx);
    check_ptrs(fit, 1, ptr);
    fs_prefetch_release(p, t);
    /* empty batch: ready at once */
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, NULL, 0, &t), FS_OK);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t, ptr), FS_OK);
    fs_prefetch_release(p, t);
    fs_prefetch_free(p);
    fixture_drop(&fx);
}
END_TEST

typedef struct releaser {
    fs_prefetch *p;
    int ticket;
} releaser;

static void *release_later(void *arg)
{
    releaser *r = arg;
    struct timespec ts = { 0, 50 * 1000 * 1000 };
    nanosleep(&ts, NULL);
    fs_prefetch_release(r->p, r->ticket);
    return NULL;
}

/* The caller holds batch 0 while 11 more cycle through the other slots;
 * then a submit with every slot held blocks until another thread releases. */
START_TEST(ring_wraps)
{
    fixture fx;
    fixture_make(&fx);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_prefetch_opts o;
    opts_small(&o, 1);
    o.slots = 3;
    fs_prefetch *p;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    enum { NB = 12 };
    fs_extent ext[NB][2];
    int t[NB];
    for (int b = 0; b < NB; b++) {
        ext[b][0] = (fs_extent){ fx.path[b % NFILE], (uint64_t)b * 37 % file_size[b % NFILE], 0 };
        ext[b][0].length = file_size[b % NFILE] - ext[b][0].offset;
        ext[b][1] = (fs_extent){ fx.path[1], 4096u * (unsigned)b + 5, 9000 };
    }
    const uint8_t *held[2], *ptr[2];
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext[0], 2, &t[0]), FS_OK);
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext[1], 2, &t[1]), FS_OK);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t[0], held), FS_OK);
    for (int b = 1; b < NB; b++) {
        if (b + 1 < NB) ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext[b + 1], 2, &t[b + 1]), FS_OK);
        ck_assert_msg(fs_prefetch_wait(&ctx, p, t[b], ptr) == FS_OK, "%s", ctx.errmsg);
        check_ptrs(ext[b], 2, ptr);
        fs_prefetch_release(p, t[b]);
    }
    check_ptrs(ext[0], 2, held);   /* untouched while the others were read */

    /* all three slots lent: the fourth submit waits for the releaser */
    int u[3];
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext[1], 2, &u[0]), FS_OK);
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext[2], 2, &u[1]), FS_OK);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, u[0], ptr), FS_OK);
    releaser rel = { p, u[0] };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, release_later, &rel), 0);
    double t0 = fs_now();
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext[3], 2, &u[2]), FS_OK);
    double dt = fs_now() - t0;
    ck_assert_int_eq(pthread_join(th, NULL), 0);
    ck_assert_msg(dt > 0.03, "submit returned after %.3f s, before the release", dt);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, u[2], ptr), FS_OK);
    check_ptrs(ext[3], 2, ptr);
    check_ptrs(ext[0], 2, held);
    fs_prefetch_release(p, u[2]);
    fs_prefetch_release(p, u[1]);   /* never waited for: dropped */
    fs_prefetch_release(p, t[0]);
    fs_prefetch_free(p);
    fixture_drop(&fx);
}
END_TEST

/* ---- rigged I/O ---------------------------------------------------------- */

typedef struct rig {
    int refuse_direct_open;   /* opens with O_DIRECT fail with EINVAL */
    int refuse_direct_read;   /* O_DIRECT reads fail with EINVAL */
    int flaky;                /* -EAGAIN and short reads */
    const char *fail_path;    /* -EIO for a read of this file covering fail_off */
    uint64_t fail_off;
    int calls, direct_reads, opens;
    /* reads that must follow: the same offset after -EAGAIN, the rest after a
     * short read (the kernel did read the bytes, so only this shows a
     * dropped requeue) */
    struct { char path[4200]; uint64_t off; } expect[64];
    int nexpect;
} rig;

static void rig_expect(rig *g, const char *path, uint64_t off)
{
    ck_assert(g->nexpect < 64);
    snprintf(g->expect[g->nexpect].path, sizeof g->expect[0].path, "%s", path);
    g->expect[g->nexpect++].off = off;
}

static int rig_open(void *arg, const char *path, int direct)
{
    rig *g = arg;
    (void)path;
    g->opens++;
    return direct && g->refuse_direct_open ? -EINVAL : 0;
}

static int rig_read(void *arg, const char *path, uint64_t off, int direct, int res)
{
    rig *g = arg;
    int k = g->calls++;
    g->direct_reads += direct;
    for (int i = 0; i < g->nexpect; i++)
        if (g->expect[i].off == off && strcmp(g->expect[i].path, path) == 0) {
            g->expect[i] = g->expect[--g->nexpect];
            break;
        }
    if (direct && g->refuse_direct_read) return -EINVAL;
    if (g->fail_path && strcmp(path, g->fail_path) == 0 && off <= g->fail_off &&
        g->fail_off < off + (uint64_t)(res > 0 ? res : 0))
        return -EIO;
    if (g->flaky && k % 3 == 1) {
        rig_expect(g, path, off);
        return -EAGAIN;
    }
    if (g->flaky && k % 4 == 2 && res > 8192) {   /* short, kept aligned for O_DIRECT */
        int s = direct ? (res / 2) & ~4095 : res / 2;
        rig_expect(g, path, off + (uint64_t)s);   /* needed: res > 8192 leaves < need */
        return s;
    }
    return res;
}

static void run_rigged(rig *g, int direct, fs_prefetch_stats *s)
{
    fixture fx;
    fixture_make(&fx);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_prefetch_opts o;
    opts_small(&o, direct);
    o.max_request = 16384;
    o.rig_open = rig_open;
    o.rig_read = rig_read;
    o.rig_arg = g;
    fs_prefetch *p;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    t_rng r = { 77 };
    for (int b = 0; b < 12; b++) {
        fs_extent ext[16];
        int n = random_batch(&r, &fx, ext, 16), t;
        const uint8_t *ptr[16];
        ck_assert_msg(fs_prefetch_submit(&ctx, p, ext, n, &t) == FS_OK, "%s", ctx.errmsg);
        ck_assert_msg(fs_prefetch_wait(&ctx, p, t, ptr) == FS_OK, "%s", ctx.errmsg);
        check_ptrs(ext, n, ptr);
        fs_prefetch_release(p, t);
    }
    fs_prefetch_get_stats(p, s);
    fs_prefetch_free(p);
    fixture_drop(&fx);
}

/* O_DIRECT refused at open (as tmpfs did before Linux 6.6): buffered reads. */
START_TEST(direct_refused_at_open)
{
    rig g = { .refuse_direct_open = 1 };
    fs_prefetch_stats s;
    run_rigged(&g, 1, &s);
    ck_assert_int_eq(s.direct, 0);
    ck_assert_int_eq(g.direct_reads, 0);
}
END_TEST

/* O_DIRECT refused at the first read: that read and all later ones buffered. */
START_TEST(direct_refused_at_read)
{
    rig g = { .refuse_direct_read = 1 };
    fs_prefetch_stats s;
    run_rigged(&g, 1, &s);
    ck_assert_int_eq(s.direct, 0);
    ck_assert_int_le(g.direct_reads, 4 * 4);   /* at most a queue's worth per file */
    ck_assert_int_gt(s.requeues, 0);
}
END_TEST

/* -EAGAIN and short reads are requeued until the bytes are complete. */
START_TEST(eagain_and_short_reads)
{
    for (int direct = 0; direct <= 1; direct++) {
        rig g = { .flaky = 1 };
        fs_prefetch_stats s;
        run_rigged(&g, direct, &s);
        ck_assert_uint_gt(s.requeues, 5);
        ck_assert_msg(g.nexpect == 0, "%d reads not resumed, e.g. %s @%llu", g.nexpect,
                      g.expect[0].path, (unsigned long long)g.expect[0].off);
    }
}
END_TEST

/* A missing file fails the submit, naming it; the prefetcher goes on. */
START_TEST(missing_file)
{
    fixture fx;
    fixture_make(&fx);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_prefetch_opts o;
    opts_small(&o, 1);
    fs_prefetch *p;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    char missing[4300];
    snprintf(missing, sizeof missing, "%s/no-such-shard.bin", fx.dir);
    fs_extent ext[] = { { fx.path[0], 0, 100 }, { missing, 0, 100 } };
    int t;
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext, 2, &t), FS_ERR_IO);
    ck_assert_msg(strstr(ctx.errmsg, missing) != NULL, "message: %s", ctx.errmsg);
    fs_ctx_clear(&ctx);
    const uint8_t *ptr[1];
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext, 1, &t), FS_OK);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t, ptr), FS_OK);
    check_ptrs(ext, 1, ptr);
    fs_prefetch_release(p, t);
    fs_prefetch_free(p);
    fixture_drop(&fx);
}
END_TEST

/* Bytes asked beyond EOF: the wait fails naming the file and offset; the
 * prefetcher then refuses new batches; free does not hang. */
START_TEST(past_eof)
{
    fixture fx;
    fixture_make(&fx);
    for (int direct = 0; direct <= 1; direct++) {
        fs_ctx ctx;
        fs_ctx_init(&ctx);
        ctx.quiet = 1;
        fs_prefetch_opts o;
        opts_small(&o, direct);
        fs_prefetch *p;
        ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
        fs_extent ext[] = { { fx.path[2], 4000, 200 } };   /* file has 4097 bytes */
        int t;
        const uint8_t *ptr[1];
        ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext, 1, &t), FS_OK);
        ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t, ptr), FS_ERR_IO);
        ck_assert_msg(strstr(ctx.errmsg, fx.path[2]) && strstr(ctx.errmsg, "end of file"),
                      "message: %s", ctx.errmsg);
        fs_ctx_clear(&ctx);
        ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext, 1, &t), FS_ERR_IO);
        fs_prefetch_free(p);
    }
    fixture_drop(&fx);
}
END_TEST

/* -EIO in the middle of the second of three batches in flight. */
START_TEST(read_error)
{
    fixture fx;
    fixture_make(&fx);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    rig g = { .fail_path = fx.path[1], .fail_off = 131072 };
    fs_prefetch_opts o;
    opts_small(&o, 1);
    o.max_request = 16384;
    o.queue_depth = 2;
    o.rig_read = rig_read;
    o.rig_arg = &g;
    fs_prefetch *p;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    fs_extent a[] = { { fx.path[0], 0, file_size[0] } };
    fs_extent b[] = { { fx.path[1], 0, file_size[1] } };
    int ta, tb, tc;
    const uint8_t *ptr[1];
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, a, 1, &ta), FS_OK);
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, b, 1, &tb), FS_OK);
    /* the failure may already have stopped the prefetcher */
    fs_status sc = fs_prefetch_submit(&ctx, p, a, 1, &tc);
    ck_assert(sc == FS_OK || sc == FS_ERR_IO);
    fs_ctx_clear(&ctx);
    fs_status sa = fs_prefetch_wait(&ctx, p, ta, ptr);
    if (sa == FS_OK) check_ptrs(a, 1, ptr);
    fs_ctx_clear(&ctx);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, tb, ptr), FS_ERR_IO);
    ck_assert_msg(strstr(ctx.errmsg, fx.path[1]) && strstr(ctx.errmsg, "@131072"),
                  "message: %s", ctx.errmsg);
    fs_ctx_clear(&ctx);
    if (sc == FS_OK) {   /* read before the error, or cut short by it */
        sc = fs_prefetch_wait(&ctx, p, tc, ptr);
        ck_assert(sc == FS_OK || sc == FS_ERR_IO);
        if (sc == FS_OK) check_ptrs(a, 1, ptr);
    }
    fs_prefetch_free(p);
    fixture_drop(&fx);
}
END_TEST

/* Bad options are refused, naming the value; a custom allocator gets back
 * every buffer it gave. */
typedef struct counter { int alloc, release; size_t bytes; } counter;

static void *count_alloc(size_t bytes, void *arg)
{
    counter *c = arg;
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes)) return NULL;
    c->alloc++;
    c->bytes = bytes;
    return p;
}

static void count_release(void *ptr, size_t bytes, void *arg)
{
    counter *c = arg;
    ck_assert_uint_eq(bytes, c->bytes);
    c->release++;
    free(ptr);
}

START_TEST(options_and_alloc)
{
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_prefetch_opts o;
    fs_prefetch *p = (fs_prefetch *)&o;
    opts_small(&o, 1);
    o.slot_bytes = 5000;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_ERR_USAGE);
    ck_assert(p == NULL);
    ck_assert_msg(strstr(ctx.errmsg, "5000") != NULL, "message: %s", ctx.errmsg);
    fs_ctx_clear(&ctx);
    opts_small(&o, 1);
    o.max_request = 1000;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_ERR_USAGE);
    fs_ctx_clear(&ctx);
    opts_small(&o, 1);
    o.queue_depth = 0;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_ERR_USAGE);
    fs_ctx_clear(&ctx);

    counter c = { 0, 0, 0 };
    opts_small(&o, 1);
    o.alloc = count_alloc;
    o.release = count_release;
    o.alloc_arg = &c;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    fs_prefetch_free(p);
    fs_prefetch_free(NULL);
    ck_assert_int_eq(c.alloc, 3);
    ck_assert_int_eq(c.release, 3);
}
END_TEST

/* Slots over 1 GiB cannot be registered (a kernel limit): plain reads.  The
 * memory is allocated but only the bytes read are touched. */
START_TEST(unregistered_buffers)
{
    fixture fx;
    fixture_make(&fx);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ctx.quiet = 1;
    fs_prefetch_opts o;
    opts_small(&o, 1);
    o.slots = 1;
    o.slot_bytes = (1ull << 30) + 4096;
    fs_prefetch *p;
    ck_assert_int_eq(fs_prefetch_new(&ctx, &o, &p), FS_OK);
    fs_extent ext[] = { { fx.path[1], 3, 200000 }, { fx.path[0], 99000, 1003 } };
    int t;
    const uint8_t *ptr[2];
    ck_assert_int_eq(fs_prefetch_submit(&ctx, p, ext, 2, &t), FS_OK);
    ck_assert_int_eq(fs_prefetch_wait(&ctx, p, t, ptr), FS_OK);
    check_ptrs(ext, 2, ptr);
    fs_prefetch_release(p, t);
    fs_prefetch_stats s;
    fs_prefetch_get_stats(p, &s);
    ck_assert_int_eq(s.registered, 0);
    fs_prefetch_free(p);
    fixture_drop(&fx);
}
END_TEST

Suite *fs_suite_prefetch(void)
{
    Suite *s = suite_create("prefetch");
    struct { const char *name; const TTest *fn; } cases[] = {
        { "random_buffered", random_buffered },
        { "random_direct", random_direct },
        { "random_split", random_split },
        { "need_exact", need_exact },
        { "split_and_fit", split_and_fit },
        { "ring_wraps", ring_wraps },
        { "direct_refused_at_open", direct_refused_at_open },
        { "direct_refused_at_read", direct_refused_at_read },
        { "eagain_and_short_reads", eagain_and_short_reads },
        { "missing_file", missing_file },
        { "past_eof", past_eof },
        { "read_error", read_error },
        { "options_and_alloc", options_and_alloc },
        { "unregistered_buffers", unregistered_buffers },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        TCase *tc = tcase_create(cases[i].name);
        tcase_set_timeout(tc, 20);
        tcase_add_test(tc, cases[i].fn);
        suite_add_tcase(s, tc);
    }
    return s;
}
