/* ctx.c: the context struct, status names, error recording, logging, checked
 * size arithmetic.  The context is the only mutable state a run has. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "src/core/core.h"

/* The one global: a signal handler can reach nothing else (see core.h). */
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

void fs_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int fs_interrupted(void)
{
    return (int)stop_signal;
}

const char *fs_status_str(fs_status st)
{
    switch (st) {
    case FS_OK: return "ok";
    case FS_ERR_NOMEM: return "out of memory";
    case FS_ERR_IO: return "I/O error";
    case FS_ERR_FORMAT: return "bad format";
    case FS_ERR_CORRUPT: return "checksum mismatch";
    case FS_ERR_NUMERIC: return "numerical error";
    case FS_ERR_CUDA: return "CUDA error";
    case FS_ERR_USAGE: return "usage error";
    case FS_ERR_ABORTED: return "aborted";
    case FS_ERR_NODEV: return "no device";
    case FS_ERR_NOSPACE: return "no space left";
    }
    return "unknown status";
}

void fs_ctx_init(fs_ctx *ctx)
{
    memset(ctx, 0, sizeof *ctx);
}

fs_status fs_ctx_err(fs_ctx *ctx, fs_status code, const char *fmt, ...)
{
    if (ctx->err == FS_OK) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(ctx->errmsg, sizeof ctx->errmsg, fmt, ap);
        va_end(ap);
        ctx->err = code;
    }
    return code;
}

void fs_ctx_clear(fs_ctx *ctx)
{
    ctx->err = FS_OK;
    ctx->errmsg[0] = '\0';
}

void fs_log(const fs_ctx *ctx, const char *fmt, ...)
{
    if (ctx->quiet) return;
    va_list ap;
    va_start(ap, fmt);
    fputs("forge-stream: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

double fs_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int fs_mul_size(size_t a, size_t b, size_t *out)
{
    if (b != 0 && a > SIZE_MAX / b) return -1;
    *out = a * b;
    return 0;
}

void *fs_alloc2(size_t a, size_t b)
{
    size_t n;
    if (fs_mul_size(a, b, &n) != 0) return NULL;
    return malloc(n ? n : 1);
}
