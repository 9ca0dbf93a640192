/* bench-prefetch.c: the prefetcher's read speed as a ratio to dd's, measured
 * in the same run.
 *
 *   bench-prefetch FILE... [--slots N] [--slot-mb M] [--depth D] [--request-mb R] [--reps K]
 *
 * Reads every FILE completely through fs_prefetch with O_DIRECT, in batches of
 * about one slot, each batch cut into 8 extents at unaligned points (as a
 * layer's tensors would be), N slots in flight; then reads the same files with
 * `dd if=F of=/dev/null bs=8M iflag=direct`.  The page cache is dropped before
 * each measurement when running as root (O_DIRECT bypasses it anyway).  Each
 * figure is the best of K runs.  The table goes to stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream/prefetch.h"

#define PIECES 8   /* extents per batch */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: bench-prefetch FILE... [--slots N] [--slot-mb M] [--depth D]\n"
            "                      [--request-mb R] [--reps K]\n"
            "  --slots N       buffers in the ring, 1..64 (default 2)\n"
            "  --slot-mb M     MiB per buffer and per batch, 1..16384 (default 256);\n"
            "                  N x M MiB of memory is allocated\n"
            "  --depth D       reads in flight, 1..4096 (default 16)\n"
            "  --request-mb R  largest single read in MiB, 1..1024 (default 8)\n"
            "  --reps K        runs of each reader, best kept, 1..20 (default 1)\n");
}

static int parse_int(const char *flag, const char *v, int lo, int hi, int *out)
{
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) {
        fprintf(stderr, "bench-prefetch: %s '%s' is not an integer in [%d, %d]\n", flag,
                v ? v : "", lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

static void drop_caches(void)
{
    if (geteuid() != 0) return;
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (!f) return;
    fputs("3\n", f);
    fclose(f);
}

typedef struct batch {
    fs_extent ext[PIECES];
    int n;
} batch;

/* One pass through the prefetcher; seconds, or < 0 on error (printed). */
static double run_prefetch(fs_ctx *ctx, fs_prefetch *p, const batch *b, int nb, int slots)
{
    int *ticket = malloc(sizeof(int) * (size_t)nb);
    double t0 = fs_now();
    int sub = 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < nb; i++) {
        while (sub < nb && sub < i + slots) {
            if (fs_prefetch_submit(ctx, p, b[sub].ext, b[sub].n, &ticket[sub])) goto fail;
            sub++;
        }
        const uint8_t *ptr[PIECES];
        if (fs_prefetch_wait(ctx, p, ticket[i], ptr)) goto fail;
        for (int k = 0; k < b[i].n; k++)   /* the caller's "compute": one byte per extent */
            if (b[i].ext[k].length) sink ^= ptr[k][b[i].ext[k].length - 1];
        fs_prefetch_release(p, ticket[i]);
    }
    (void)sink;
    free(ticket);
    return fs_now() - t0;
fail:
    fprintf(stderr, "bench-prefetch: error: %s\n", ctx->errmsg);
    free(ticket);
    return -1;
}

static double run_dd(char **files, int nf)
{
    double t0 = fs_now();
    for (int i = 0; i < nf; i++) {
        char cmd[8192];
        if (strchr(files[i], '\'')) return -1;
        snprintf(cmd, sizeof cmd, "dd if='%s' of=/dev/null bs=8M iflag=direct status=none",
                 files[i]);
        if (system(cmd) != 0) {
            fprintf(stderr, "bench-prefetch: '%s' failed\n", cmd);
            return -1;
        }
    }
    return fs_now() - t0;
}

int main(int argc, char **argv)
{
    int slots = 2, slot_mb = 256, depth = 16, request_mb = 8, reps = 1;
    char **files = calloc((size_t)argc, sizeof *files);
    int nf = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { usage(stdout); return 0; }
        else if (!strcmp(a, "--slots")) { bad = parse_int(a, v, 1, 64, &slots); i++; }
        else if (!strcmp(a, "--slot-mb")) { bad = parse_int(a, v, 1, 16384, &slot_mb); i++; }
        else if (!strcmp(a, "--depth")) { bad = parse_int(a, v, 1, 4096, &depth); i++; }
        else if (!strcmp(a, "--request-mb")) { bad = parse_int(a, v, 1, 1024, &request_mb); i++; }
        else if (!strcmp(a, "--reps")) { bad = parse_int(a, v, 1, 20, &reps); i++; }
        else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "bench-prefetch: unknown option '%s'\n", a);
            bad = 1;
        } else files[nf++] = argv[i];
        if (bad) { usage(stderr); return 2; }
    }
    if (nf == 0) { usage(stderr); return 2; }

    uint64_t slot_bytes = (uint64_t)slot_mb << 20, total = 0;
    int nb = 0, cap = 0;
    batch *b = NULL;
    for (int f = 0; f < nf; f++) {
        struct stat st;
        if (stat(files[f], &st) != 0 || !S_ISREG(st.st_mode)) {
            fprintf(stderr, "bench-prefetch: '%s' is not a readable regular file\n", files[f]);
            return 2;
        }
        uint64_t size = (uint64_t)st.st_size;
        total += size;
        for (uint64_t pos = 0; pos < size; pos += slot_bytes) {
            if (nb == cap) {
                cap = cap ? 2 * cap : 64;
                b = realloc(b, sizeof *b * (size_t)cap);
            }
            uint64_t len = size - pos < slot_bytes ? size - pos : slot_bytes, at = pos;
            batch *x = &b[nb++];
            x->n = PIECES;
            for (int k = 0; k < PIECES; k++) {   /* cuts at unaligned points */
                uint64_t end = k == PIECES - 1 ? pos + len : pos + len / PIECES * (uint64_t)(k + 1) + 12;
                if (end > pos + len) end = pos + len;
                x->ext[k] = (fs_extent){ files[f], at, end - at };
                at = end;
            }
        }
    }

    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_prefetch_opts o;
    fs_prefetch_opts_default(&o);
    o.slots = slots;
    o.slot_bytes = slot_bytes;
    o.queue_depth = depth;
    o.max_request = (uint64_t)request_mb << 20;
    o.direct = 1;
    fs_prefetch *p;
    if (fs_prefetch_new(&ctx, &o, &p)) {
        fprintf(stderr, "bench-prefetch: error: %s\n", ctx.errmsg);
        return 1;
    }
    fprintf(stderr, "bench-prefetch: %d file(s), %.3f GB, %d batches; slots %d x %d MiB, depth %d, "
            "reads <= %d MiB, reps %d%s\n", nf, (double)total / 1e9, nb, slots, slot_mb, depth,
            request_mb, reps, geteuid() == 0 ? "" : " (not root: page cache not dropped)");

    double best_pf = 1e30, best_dd = 1e30;
    for (int r = 0; r < reps; r++) {
        drop_caches();
        double t = run_prefetch(&ctx, p, b, nb, slots);
        if (t < 0) { fs_prefetch_free(p); return 1; }
        if (t < best_pf) best_pf = t;
    }
    fs_prefetch_stats s;
    fs_prefetch_get_stats(p, &s);
    fs_prefetch_free(p);
    for (int r = 0; r < reps; r++) {
        drop_caches();
        double t = run_dd(files, nf);
        if (t < 0) return 1;
        if (t < best_dd) best_dd = t;
    }

    double gb = (double)total / 1e9;
    printf("%-34s %10s %9s %8s\n", "reader", "GB", "seconds", "GB/s");
    printf("%-34s %10.3f %9.3f %8.2f\n", "fs_prefetch (O_DIRECT)", gb, best_pf, gb / best_pf);
    printf("%-34s %10.3f %9.3f %8.2f\n", "dd bs=8M iflag=direct", gb, best_dd, gb / best_dd);
    printf("ratio ours/dd: %.2f\n", best_dd / best_pf);
    printf("prefetch: %llu reads, %llu requeued, busy %.3f s over %d run(s), direct %d, "
           "registered %d\n", (unsigned long long)s.requests, (unsigned long long)s.requeues,
           s.busy_s, reps, s.direct, s.registered);
    free(b);
    free(files);
    return 0;
}
