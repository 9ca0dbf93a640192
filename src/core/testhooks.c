/* testhooks.c: the crash points and injected I/O faults of the kill-and-
 * resume tests (core.h).  They exist only in test builds (-DFS_TEST, as
 * SQLite's SQLITE_TEST): the Makefile links this file compiled with it into
 * the binary the suites run ($(BUILD)/forge-stream-test) and into the suites
 * themselves; bin/forge-stream gets the inert versions below and never reads
 * FORGE_STREAM_CRASH_* or FORGE_STREAM_FAIL_* from the environment. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/core/core.h"

#ifdef FS_TEST

int fs_crash_from_env(fs_ctx *ctx, fs_crash *c)
{
    memset(c, 0, sizeof *c);
    const char *v = getenv("FORGE_STREAM_CRASH_AT");
    int on = getenv("FORGE_STREAM_CRASH_REPORT") != NULL;
    if (v && *v) {
        const char *colon = strrchr(v, ':');
        char *end = NULL;
        long at = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == v || (size_t)(colon - v) >= sizeof c->point || !end || *end || at < 1) {
            fs_ctx_err(ctx, FS_ERR_USAGE, "FORGE_STREAM_CRASH_AT '%s': must be POINT:N with N >= 1", v);
            return -1;
        }
        memcpy(c->point, v, (size_t)(colon - v));
        c->at = at;
        const char *sg = getenv("FORGE_STREAM_CRASH_SIGNAL");
        c->sig = sg ? atoi(sg) : 0;
        on = 1;
    }
    const char *fv = getenv("FORGE_STREAM_FAIL_AT");
    if (fv && *fv) {
        const char *colon = strrchr(fv, ':');
        char *end = NULL;
        long at = colon ? strtol(colon + 1, &end, 10) : 0;
        if (!colon || colon == fv || (size_t)(colon - fv) >= sizeof c->fail_point || !end || *end || at < 1) {
            fs_ctx_err(ctx, FS_ERR_USAGE, "FORGE_STREAM_FAIL_AT '%s': must be POINT:N with N >= 1", fv);
            return -1;
        }
        memcpy(c->fail_point, fv, (size_t)(colon - fv));
        c->fail_at = at;
        const char *fe = getenv("FORGE_STREAM_FAIL_ERRNO");
        c->fail_errno = fe && atoi(fe) > 0 ? atoi(fe) : EIO;
        on = 1;
    }
    return on;
}

int fs_io_fault(const fs_ctx *ctx, const char *point)
{
    fs_crash *c = ctx ? ctx->crash : NULL;
    if (!c || c->fail_at <= 0 || strcmp(c->fail_point, point)) return 0;
    return __atomic_add_fetch(&c->fail_hits, 1, __ATOMIC_SEQ_CST) == c->fail_at ? c->fail_errno : 0;
}

void fs_crashpoint(const fs_ctx *ctx, const char *point)
{
    fs_crash *c = ctx ? ctx->crash : NULL;
    if (!c) return;
    long all = __atomic_add_fetch(&c->passed, 1, __ATOMIC_SEQ_CST);
    if (c->at <= 0) return;
    long n = -1;
    if (!strcmp(c->point, "*")) n = all;
    else if (!strcmp(c->point, point)) n = __atomic_add_fetch(&c->hits, 1, __ATOMIC_SEQ_CST);
    if (n == c->at) {
        fprintf(stderr, "forge-stream: crash point %s (#%ld): signal %d\n", point, n, c->sig > 0 ? c->sig : SIGKILL);
        kill(getpid(), c->sig > 0 ? c->sig : SIGKILL);
    }
}

void fs_crash_report(const fs_ctx *ctx)
{
    if (ctx->crash && getenv("FORGE_STREAM_CRASH_REPORT"))
        fprintf(stderr, "forge-stream: crash points passed: %ld\n", __atomic_load_n(&ctx->crash->passed, __ATOMIC_SEQ_CST));
}

const char *fs_test_env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

#else   /* a release build: no hooks */

const char *fs_test_env(const char *name)
{
    (void)name;
    return NULL;
}

int fs_crash_from_env(fs_ctx *ctx, fs_crash *c)
{
    (void)ctx;
    memset(c, 0, sizeof *c);
    return 0;
}

int fs_io_fault(const fs_ctx *ctx, const char *point)
{
    (void)ctx;
    (void)point;
    return 0;
}

void fs_crashpoint(const fs_ctx *ctx, const char *point)
{
    (void)ctx;
    (void)point;
}

void fs_crash_report(const fs_ctx *ctx)
{
    (void)ctx;
}

#endif
