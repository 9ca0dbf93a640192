/* trace.c: span recording, the Chrome trace, --timings and the end table
 * (trace.h).  Spans are kept in memory (a few per layer and stage) and
 * written once at the end, so tracing costs a mutex and a store per span. */
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "src/core/trace.h"

static const char *names[FS_STAGE_COUNT] = {
    "layer", "read", "upload", "forward", "hessian", "cholesky", "grid", "gptq", "download",
    "write", "journal", "expert", "spill",
};

const char *fs_stage_name(fs_stage s)
{
    return s >= 0 && s < FS_STAGE_COUNT ? names[s] : "?";
}

typedef struct span {
    fs_stage s;
    int layer;
    char name[48];
    double t0, t1;
    uint64_t bytes;
    double flops;
} span;

struct fs_trace {
    pthread_mutex_t mu;
    char *profile, *timings;
    double origin;
    span *v;
    size_t n, cap;
    int oom;
};

fs_status fs_trace_new(fs_ctx *ctx, const char *profile, const char *timings, fs_trace **out)
{
    fs_trace *t = calloc(1, sizeof *t);
    if (!t) return fs_ctx_err(ctx, FS_ERR_NOMEM, "trace");
    pthread_mutex_init(&t->mu, NULL);
    t->profile = profile ? strdup(profile) : NULL;
    t->timings = timings ? strdup(timings) : NULL;
    if ((profile && !t->profile) || (timings && !t->timings)) {
        fs_trace_free(t);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "trace");
    }
    t->origin = fs_now();
    *out = t;
    return FS_OK;
}

void fs_trace_free(fs_trace *t)
{
    if (!t) return;
    pthread_mutex_destroy(&t->mu);
    free(t->profile);
    free(t->timings);
    free(t->v);
    free(t);
}

void fs_trace_span(fs_trace *t, fs_stage s, int layer, const char *name, double t0, double t1,
                   uint64_t bytes, double flops)
{
    if (!t || s < 0 || s >= FS_STAGE_COUNT) return;
    pthread_mutex_lock(&t->mu);
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        span *v = realloc(t->v, sizeof *v * cap);
        if (!v) { t->oom = 1; pthread_mutex_unlock(&t->mu); return; }   /* drop the span */
        t->v = v;
        t->cap = cap;
    }
    span *p = &t->v[t->n++];
    p->s = s;
    p->layer = layer;
    snprintf(p->name, sizeof p->name, "%s", name ? name : names[s]);
    p->t0 = t0;
    p->t1 = t1 >= t0 ? t1 : t0;
    p->bytes = bytes;
    p->flops = flops;
    pthread_mutex_unlock(&t->mu);
}

void fs_trace_totals(const fs_trace *t, double seconds[FS_STAGE_COUNT], uint64_t bytes[FS_STAGE_COUNT])
{
    for (int s = 0; s < FS_STAGE_COUNT; s++) { seconds[s] = 0; bytes[s] = 0; }
    for (size_t i = 0; t && i < t->n; i++) {
        seconds[t->v[i].s] += t->v[i].t1 - t->v[i].t0;
        bytes[t->v[i].s] += t->v[i].bytes;
    }
}

static fs_status write_json(fs_ctx *ctx, const char *path, json_t *j, int lines)
{
    char *s = lines ? NULL : json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (lines) {                             /* j is an array: one compact line each */
        size_t cap = 1 << 16, len = 0;
        s = malloc(cap);
        for (size_t i = 0; s && i < json_array_size(j); i++) {
            char *l = json_dumps(json_array_get(j, i), JSON_COMPACT | JSON_PRESERVE_ORDER);
            size_t k = l ? strlen(l) : 0;
            while (s && len + k + 2 > cap) {
                char *n = realloc(s, cap *= 2);
                if (!n) { free(s); s = NULL; }
                else s = n;
            }
            if (s && l) { memcpy(s + len, l, k); len += k; s[len++] = '\n'; s[len] = '\0'; }
            free(l);
        }
        if (s && len == 0) s[0] = '\0';
    }
    if (!s) return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", path);
    fs_status rc = fs_write_atomic(ctx, path, s, strlen(s));
    free(s);
    return rc;
}

fs_status fs_trace_finish(fs_ctx *ctx, fs_trace *t, double wall, FILE *f)
{
    if (!t) return FS_OK;
    fs_status rc = FS_OK;
    double sec[FS_STAGE_COUNT];
    uint64_t by[FS_STAGE_COUNT];
    double fl[FS_STAGE_COUNT] = {0};
    fs_trace_totals(t, sec, by);
    for (size_t i = 0; i < t->n; i++) fl[t->v[i].s] += t->v[i].flops;
    if (t->profile) {                         /* Chrome trace events, microseconds */
        json_t *ev = json_array();
        for (int s = 0; s < FS_STAGE_COUNT; s++)
            json_array_append_new(ev, json_pack("{s:s, s:s, s:i, s:i, s:{s:s}}", "name", "thread_name",
                                                "ph", "M", "pid", 1, "tid", s, "args", "name", names[s]));
        for (size_t i = 0; i < t->n; i++) {
            const span *p = &t->v[i];
            json_array_append_new(ev, json_pack("{s:s, s:s, s:s, s:i, s:i, s:f, s:f, s:{s:i, s:I, s:f}}",
                                                "name", p->name, "cat", names[p->s], "ph", "X", "pid", 1,
                                                "tid", (int)p->s, "ts", (p->t0 - t->origin) * 1e6,
                                                "dur", (p->t1 - p->t0) * 1e6, "args", "layer", p->layer,
                                                "bytes", (json_int_t)p->bytes, "flops", p->flops));
        }
        json_t *root = json_pack("{s:o, s:s}", "traceEvents", ev, "displayTimeUnit", "ms");
        rc = root ? write_json(ctx, t->profile, root, 0) : fs_ctx_err(ctx, FS_ERR_NOMEM, "profile");
        json_decref(root);
    }
    if (rc == FS_OK && t->timings) {          /* one line per (layer, stage) */
        json_t *lines = json_array();
        int maxl = -1;
        for (size_t i = 0; i < t->n; i++) maxl = t->v[i].layer > maxl ? t->v[i].layer : maxl;
        for (int l = -1; l <= maxl; l++)
            for (int s = 0; s < FS_STAGE_COUNT; s++) {
                double x = 0, f2 = 0;
                uint64_t b = 0;
                int any = 0;
                for (size_t i = 0; i < t->n; i++)
                    if (t->v[i].layer == l && t->v[i].s == (fs_stage)s) {
                        x += t->v[i].t1 - t->v[i].t0;
                        b += t->v[i].bytes;
                        f2 += t->v[i].flops;
                        any = 1;
                    }
                if (!any) continue;
                json_array_append_new(lines, json_pack("{s:i, s:s, s:f, s:I, s:f, s:f}", "layer", l,
                                                       "stage", names[s], "seconds", x, "bytes", (json_int_t)b,
                                                       "gbps", x > 0 ? (double)b / 1e9 / x : 0.0,
                                                       "gflops", x > 0 ? f2 / 1e9 / x : 0.0));
            }
        rc = write_json(ctx, t->timings, lines, 1);
        json_decref(lines);
    }
    if (f) {
        double sum = 0, worst = 0;
        int crit = -1;
        fprintf(f, "\n%-10s %10s %12s %9s %9s %7s\n", "stage", "seconds", "bytes", "GB/s", "GFLOP/s", "share");
        for (int s = 1; s < FS_STAGE_COUNT; s++) {
            if ((sec[s] <= 0 && by[s] == 0) || s == FS_STAGE_EXPERT) continue;   /* containers */
            fprintf(f, "%-10s %10.3f %12llu %9.2f %9.1f %6.1f%%\n", names[s], sec[s], (unsigned long long)by[s],
                    sec[s] > 0 ? (double)by[s] / 1e9 / sec[s] : 0.0, sec[s] > 0 ? fl[s] / 1e9 / sec[s] : 0.0,
                    wall > 0 ? 100.0 * sec[s] / wall : 0.0);
            sum += sec[s];
            if (sec[s] > worst) { worst = sec[s]; crit = s; }
        }
        fprintf(f, "wall %.3f s; stages add up to %.3f s: overlap ratio %.2f; critical stage: %s%s\n", wall, sum,
                wall > 0 ? sum / wall : 0.0, crit >= 0 ? names[crit] : "-",
                t->oom ? " (some spans were dropped: out of memory)" : "");
    }
    return rc;
}
