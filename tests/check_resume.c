/* check_resume.c: kill -9 at any instant, resume, byte-identical output.
 *
 * The harness quantizes generated multi-layer models (dense llama, MoE
 * qwen3_moe) once without interruption, then again many times, each run
 * killed by SIGKILL at a different moment, and resumed with --resume; the
 * resumed output folder must equal the uninterrupted one byte for byte.
 * The moments come from the binary's crash points (src/core/core.h, fs_crashpoint):
 * FORGE_STREAM_CRASH_AT=POINT:N kills the process the N-th time it passes
 * POINT, "*" counting every point, so the kills spread over reading,
 * forward, GPTQ, tensor writes (between the two halves of a write), shard
 * sealing (between tensors of the file being written), activation-cache
 * chunks, journal commits (after the temporary file is written, after the
 * rename) and the final renames.  Also: a resume killed again, a corrupted
 * activation chunk and a corrupted output shard (detected, recomputed, same
 * bytes), a changed model file and conflicting flags (refused), malformed
 * journals (refused, naming the file and key), a full disk through
 * RLIMIT_FSIZE (clear error, then --resume completes), SIGTERM (exit 143,
 * resume hint, then --resume completes) and a locked work folder. */
#include <dirent.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <jansson.h>
#include <xxhash.h>

#include "tests/util.h"

typedef struct rt {
    char *tmp;
    const char *bin;
    char model[4200], flags[9000], ref[4200];
    long points;             /* crash points an uninterrupted run passes */
} rt;

static char err[16384];

static void write_sealed(const char *path, const char *text);

#define run(...) t_run_fmt(err, sizeof err, __VA_ARGS__)

static int killed(int code)
{
    return code == -1 || code == 128 + 9;
}

/* 1 when every file under a is in b with the same bytes and b has no other. */
static int same_tree(const char *a, const char *b, char *why, size_t whyn)
{
    DIR *d = opendir(a);
    if (!d) { snprintf(why, whyn, "%s: cannot open", a); return 0; }
    struct dirent *e;
    int ok = 1, na = 0;
    char pa[4400], pb[4400];
    while (ok && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        na++;
        snprintf(pa, sizeof pa, "%s/%s", a, e->d_name);
        snprintf(pb, sizeof pb, "%s/%s", b, e->d_name);
        FILE *fa = fopen(pa, "rb"), *fb = fopen(pb, "rb");
        if (!fa || !fb) { snprintf(why, whyn, "%s missing", fb ? pa : pb); ok = 0; }
        for (int ca = 0, cb = 0; ok;) {
            ca = fgetc(fa);
            cb = fgetc(fb);
            if (ca != cb) { snprintf(why, whyn, "%s differs from %s", pb, pa); ok = 0; }
            if (ca == EOF) break;
        }
        if (fa) fclose(fa);
        if (fb) fclose(fb);
    }
    closedir(d);
    if (ok && (d = opendir(b))) {
        int nb = 0;
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) nb++;
        closedir(d);
        if (nb != na) { snprintf(why, whyn, "%s holds %d entries, %s %d", b, nb, a, na); ok = 0; }
    }
    return ok;
}

/* A generated model, a calibration file, the reference output and the
 * number of crash points it passes.  0 when FS_BIN/FS_GEN_TINY are unset. */
static int setup(rt *r, const char *type, const char *extra)
{
    memset(r, 0, sizeof *r);
    r->bin = getenv("FS_BIN");
    if (!getenv("FS_GEN_TINY") || !r->bin) {
        printf("check_resume: FS_BIN/FS_GEN_TINY unset, skipped (run via make test)\n");
        return 0;
    }
    r->tmp = t_tmpdir();
    ck_assert_ptr_nonnull(r->tmp);
    snprintf(r->model, sizeof r->model, "%s/model", r->tmp);
    ck_assert_int_eq(t_gen_tiny(r->model, "--type %s --layers 3 %s", type, extra), 0);
    char calib[4300];
    snprintf(calib, sizeof calib, "%s/calib.u32", r->tmp);
    FILE *f = fopen(calib, "wb");
    t_rng g = {7};
    for (int i = 0; i < 1000; i++) {
        uint32_t id = t_next(&g) % 96;
        fwrite(&id, 4, 1, f);
    }
    fclose(f);
    /* small shards: several are sealed during the run, so kills land around seals */
    snprintf(r->flags, sizeof r->flags, "--model '%s' --calib '%s' --samples 4 --seq-len 32 --max-shard-size 40K",
             r->model, calib);
    snprintf(r->ref, sizeof r->ref, "%s/ref", r->tmp);
    ck_assert_msg(run("FORGE_STREAM_CRASH_REPORT=1 '%s' quantize %s --out '%s' --quiet", r->bin, r->flags, r->ref) == 0,
                  "reference run failed: %s", err);
    const char *p = strstr(err, "crash points passed: ");
    ck_assert_ptr_nonnull(p);
    r->points = atol(p + strlen("crash points passed: "));
    ck_assert_int_ge(r->points, 60);
    return 1;
}

static void teardown(rt *r)
{
    if (r->tmp) t_rmdir(r->tmp);
    free(r->tmp);
}

/* Killed at `point` (POINT:N), then resumed (bare: --resume --work only)
 * until it finishes; the output must equal the reference. */
static void kill_and_resume(rt *r, const char *point, int bare)
{
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r->tmp);
    run("rm -rf '%s'", out);
    int code = run("FORGE_STREAM_CRASH_AT='%s' '%s' quantize %s --out '%s' --quiet", point, r->bin, r->flags, out);
    ck_assert_msg(killed(code), "%s: the run was not killed (exit %d): %s", point, code, err);
    if (bare) code = run("'%s' --resume --work '%s/.forge-work' --quiet", r->bin, out);
    else code = run("'%s' quantize --resume %s --out '%s' --quiet", r->bin, r->flags, out);
    ck_assert_msg(code == 0, "%s: resume failed (exit %d): %s", point, code, err);
    ck_assert_msg(same_tree(r->ref, out, why, sizeof why), "%s: %s", point, why);
}

/* The named points every stage has, then points spread evenly over the run. */
static void harness(rt *r, int spread, int with_named)
{
    static const char *named[] = {
        "read:2", "forward:5", "gptq:7", "tensor-write:3", "tensor-write:20", "shard-data:2", "shard-written:1",
        "act-chunk:2", "act-written:1", "atomic-written:2", "atomic-renamed:3", "committed:2", "sealed:1",
        "finish-rename:2", "atomic-written:1",
    };
    int n = 0;
    for (size_t i = 0; with_named && i < sizeof named / sizeof *named; i++, n++)
        kill_and_resume(r, named[i], i % 3 == 0 && i > 0);
    for (int k = 0; k < spread; k++, n++) {
        char p[32];
        snprintf(p, sizeof p, "*:%ld", 1 + (long)k * (r->points - 1) / (spread - 1));
        kill_and_resume(r, p, k % 2 == 1 && k > 0);
    }
    printf("check_resume: %d kill points resumed byte-identical (%ld crash points per run)\n", n, r->points);
}

START_TEST(kill_anywhere_dense)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    harness(&r, 20, 1);
    teardown(&r);
}
END_TEST

START_TEST(kill_anywhere_moe)
{
    rt r;
    if (!setup(&r, "qwen3_moe", "")) return;
    harness(&r, 8, 1);
    teardown(&r);
}
END_TEST

/* DeepSeek-V3 (MLA, FP8 weights, MoE after a dense layer) with its MTP layer,
 * copied after the decoder layers: the last points fall in that phase. */
START_TEST(kill_anywhere_deepseek)
{
    rt r;
    if (!setup(&r, "deepseek_v3", "--mtp")) return;
    harness(&r, 8, 0);
    teardown(&r);
}
END_TEST

/* --method rtn without calibration keeps the same journal (no boundaries):
 * a DeepSeek-V3 run (FP8 dequantized, MTP copied) killed anywhere resumes
 * byte-identical too. */
START_TEST(kill_anywhere_rtn_without_calibration)
{
    rt r;
    if (!setup(&r, "deepseek_v3", "--mtp")) return;
    snprintf(r.flags, sizeof r.flags, "--model '%s' --method rtn --max-shard-size 40K", r.model);
    snprintf(r.ref, sizeof r.ref, "%s/ref-rtn", r.tmp);
    ck_assert_msg(run("FORGE_STREAM_CRASH_REPORT=1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, r.ref) == 0,
                  "%s", err);
    r.points = atol(strstr(err, "crash points passed: ") + strlen("crash points passed: "));
    ck_assert_int_ge(r.points, 60);
    harness(&r, 8, 0);
    kill_and_resume(&r, "committed:2", 1);
    kill_and_resume(&r, "tensor-write:9", 0);
    teardown(&r);
}
END_TEST

/* Other options go through the same journal: F32 boundaries, the gptq
 * format with act-order, 3-bit MSE grids with static groups. */
START_TEST(kill_anywhere_other_options)
{
    static const char *opts[] = {"--act-dtype f32", "--format gptq --act-order",
                                 "--bits 3 --group-size 32 --grid mse --static-groups --act-order"};
    rt r;
    if (!setup(&r, "llama", "")) return;
    char base[8800];
    snprintf(base, sizeof base, "%.8700s", r.flags);
    for (size_t i = 0; i < sizeof opts / sizeof *opts; i++) {
        snprintf(r.flags, sizeof r.flags, "%.8700s %.200s", base, opts[i]);
        snprintf(r.ref, sizeof r.ref, "%.4000s/ref%zu", r.tmp, i);
        ck_assert_msg(run("FORGE_STREAM_CRASH_REPORT=1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, r.ref) == 0,
                      "%s: %s", opts[i], err);
        r.points = atol(strstr(err, "crash points passed: ") + strlen("crash points passed: "));
        harness(&r, 4, 0);
        kill_and_resume(&r, "act-chunk:2", 1);
    }
    teardown(&r);
}
END_TEST

/* Spilled activations (--spill always): killed anywhere, including between
 * the spill writes, and a failed spill write; each resumed run must equal
 * the resident reference byte for byte. */
static void spilled(const char *type, int spread)
{
    rt r;
    if (!setup(&r, type, "")) return;
    char base[8800], out[4300], probe[4300], why[9000];
    snprintf(base, sizeof base, "%.8700s", r.flags);
    snprintf(r.flags, sizeof r.flags, "%.8700s --spill always", base);
    snprintf(probe, sizeof probe, "%s/probe", r.tmp);
    ck_assert_msg(run("FORGE_STREAM_CRASH_REPORT=1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, probe) == 0,
                  "%s", err);
    r.points = atol(strstr(err, "crash points passed: ") + strlen("crash points passed: "));
    ck_assert_msg(same_tree(r.ref, probe, why, sizeof why), "spilled: %s", why);
    harness(&r, spread, 0);
    kill_and_resume(&r, "spill-written:3", 1);
    kill_and_resume(&r, "spill-written:9", 0);
    snprintf(out, sizeof out, "%s/o", r.tmp);
    run("rm -rf '%s'", out);
    int c1 = run("FORGE_STREAM_FAIL_AT=spill-write:6 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out);
    ck_assert_msg(c1 == 1 && strstr(err, "/spill-") && strstr(err, ".raw") && strstr(err, "Input/output error") &&
                  strstr(err, "--resume --work"), "exit %d: %s", c1, err);
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out) == 0, "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    /* a resume under the least budget the plan takes keeps the run's batch (4
     * windows) rather than the one window the budget allows */
    ck_assert_msg(run("'%s' plan --model '%s' --samples 4 --seq-len 32 --json > '%s/plan.json'", r.bin, r.model,
                      r.tmp) == 0, "%s", err);
    char pj[4400];
    snprintf(pj, sizeof pj, "%s/plan.json", r.tmp);
    json_t *j = json_load_file(pj, 0, NULL);
    ck_assert_ptr_nonnull(j);
    long long hmin = (long long)json_integer_value(json_object_get(json_object_get(j, "total"), "host_min"));
    json_decref(j);
    run("rm -rf '%s'", out);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:1 '%s' quantize %.8700s --out '%s' --quiet", r.bin, base, out)));
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --host-mem %lld", r.bin, out, hmin) == 0, "%s", err);
    ck_assert_msg(strstr(err, "resume: batches of 128 tokens, as the run had (the budget now allows 32)"), "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}

START_TEST(kill_anywhere_spilled_dense) { spilled("llama", 8); }
END_TEST
START_TEST(kill_anywhere_spilled_moe) { spilled("qwen3_moe", 4); }
END_TEST

/* The kill-anywhere harness on --backend cpu-async: the reference is the
 * uninterrupted run on cpu, every killed run and its resumes run on
 * cpu-async (queues as threads: a kill lands with work still queued), and
 * each resumed output must equal the cpu reference byte for byte. */
static void on_async(rt *r)
{
    char base[8800];
    snprintf(base, sizeof base, "%.8700s", r->flags);
    snprintf(r->flags, sizeof r->flags, "%.8700s --backend cpu-async", base);
}

START_TEST(kill_anywhere_dense_async)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    on_async(&r);
    harness(&r, 8, 1);
    teardown(&r);
}
END_TEST

START_TEST(kill_anywhere_moe_async)
{
    rt r;
    if (!setup(&r, "qwen2_moe", "")) return;
    on_async(&r);
    harness(&r, 8, 0);
    teardown(&r);
}
END_TEST

START_TEST(kill_anywhere_deepseek_async)
{
    rt r;
    if (!setup(&r, "deepseek_v3", "--fp8 --mtp")) return;
    on_async(&r);
    harness(&r, 8, 0);
    teardown(&r);
}
END_TEST

START_TEST(kill_anywhere_spilled_async)
{
    rt r;
    if (!setup(&r, "qwen3_moe", "")) return;
    char base[8800];
    snprintf(base, sizeof base, "%.8700s", r.flags);
    snprintf(r.flags, sizeof r.flags, "%.8700s --spill always --backend cpu-async", base);
    harness(&r, 8, 0);
    kill_and_resume(&r, "spill-written:3", 1);
    kill_and_resume(&r, "spill-written:9", 0);
    teardown(&r);
}
END_TEST

/* Killed before the first commit.  Before the flags are saved (the first
 * atomic write is start.json): a bare --resume says to run the command again,
 * and running it again works although --out holds the work folder.  After
 * they are saved, before the journal: a bare --resume starts over from them.
 * Both end byte-identical. */
START_TEST(killed_before_first_commit)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=atomic-written:1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work'", r.bin, out), 2);
    ck_assert_msg(strstr(err, "start it again"), "%s", err);
    ck_assert_msg(run("'%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out) == 0, "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    run("rm -rf '%s'", out);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=atomic-renamed:1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work'", r.bin, out) == 0, "%s", err);
    ck_assert_msg(strstr(err, "starting over"), "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* Killed, resumed and killed again during the resume, resumed again. */
START_TEST(killed_twice)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=tensor-write:4 '%s' --resume --work '%s/.forge-work'", r.bin, out)));
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out) == 0, "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    /* a finished run: nothing to resume, said, exit 0 */
    ck_assert_int_eq(run("'%s' quantize --resume --out '%s'", r.bin, out), 0);
    ck_assert_ptr_nonnull(strstr(err, "nothing to do"));
    teardown(&r);
}
END_TEST

static void flip_byte(const char *path, long off_from_end)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_msg(f != NULL, "%s: %s", path, strerror(errno));
    fseek(f, -off_from_end, SEEK_END);
    int c = fgetc(f);
    fseek(f, -off_from_end, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
}

/* A damaged committed file is detected by its checksum and never trusted:
 * a damaged latest boundary costs one layer (recomputed from the boundary
 * before it, which the journal keeps with the state it belongs to); a
 * damaged shard sealed early costs the run (the embeddings are the last
 * good boundary).  The output comes out identical either way. */
START_TEST(corrupted_files_recomputed)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000], path[4400];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    /* an activation chunk: after layer 1's commit, the boundary act-0002.fsa */
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    snprintf(path, sizeof path, "%s/.forge-work/act-0002.fsa", out);
    flip_byte(path, 100);                            /* inside the (last) chunk's payload */
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work'", r.bin, out) == 0, "%s", err);
    /* one layer back: the journal keeps the previous state and its boundary */
    ck_assert_msg(strstr(err, "act-0002.fsa") && strstr(err, "checksum") &&
                  strstr(err, "recomputing from model.layers.1, the last good boundary (act-0001.fsa)"), "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    /* two boundaries are kept (the journal's state and the one before it), no more */
    run("rm -rf '%s'", out);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=sealed:1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    snprintf(path, sizeof path, "%s/.forge-work/act-0002.fsa", out);
    ck_assert_msg(access(path, F_OK) == 0, "%s: gone", path);
    snprintf(path, sizeof path, "%s/.forge-work/act-0001.fsa", out);
    ck_assert_msg(access(path, F_OK) != 0, "%s: still there after the last commit", path);
    /* an output shard sealed and committed */
    run("rm -rf '%s'", out);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:3 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    snprintf(path, sizeof path, "%s/.shard-00001.partial", out);
    ck_assert_msg(access(path, F_OK) == 0, "no sealed shard at the third commit");
    flip_byte(path, 5000);
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work'", r.bin, out) == 0, "%s", err);
    ck_assert_msg(strstr(err, ".shard-00001.partial") && strstr(err, "recomputing from model.layers.0"), "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* The files a killed run committed: the journal, the journal before it and
 * the saved flags, the boundaries, the sealed and staged shards. */
static int committed_files(const char *out, char names[][4400], int max)
{
    const char *dirs[2] = {out, NULL};
    char work[4400];
    snprintf(work, sizeof work, "%s/.forge-work", out);
    dirs[1] = work;
    int n = 0;
    for (int d = 0; d < 2; d++) {
        DIR *dp = opendir(dirs[d]);
        struct dirent *e;
        while (dp && (e = readdir(dp)) && n < max) {
            const char *s = e->d_name;
            if (!strcmp(s, "journal.json") || !strcmp(s, "journal.prev.json") || !strcmp(s, "start.json") ||
                (!strncmp(s, "act-", 4) && strstr(s, ".fsa")) || !strncmp(s, ".shard-", 7))
                snprintf(names[n++], 4400, "%.2000s/%.200s", dirs[d], s);
        }
        if (dp) closedir(dp);
    }
    return n;
}

/* One damage of a committed file: a bit flipped, a digit of a JSON field
 * changed, or an 8-byte field of a binary file overwritten. */
static void damage(const char *path, t_rng *g, char *what, size_t n)
{
    FILE *f = fopen(path, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    ck_assert_int_gt(size, 0);
    uint8_t *b = malloc((size_t)size);
    fseek(f, 0, SEEK_SET);
    ck_assert_int_eq(fread(b, 1, (size_t)size, f), size);
    int json = strstr(path, ".json") != NULL, kind = (int)(t_next(g) % 2);
    long at = (long)(t_next(g) % (uint32_t)size);
    if (kind == 0) {
        int bit = (int)(t_next(g) % 8);
        b[at] ^= (uint8_t)(1u << bit);
        snprintf(what, n, "bit %d of byte %ld", bit, at);
    } else if (json) {                            /* a digit of some field: 0-9 or a hex checksum digit */
        long k = at;
        while (k < size && !(b[k] >= '0' && b[k] <= '9')) k++;
        if (k == size) k = at;
        uint8_t was = b[k];
        b[k] = (uint8_t)(b[k] >= '0' && b[k] <= '8' ? b[k] + 1 : '0');
        snprintf(what, n, "JSON field digit at byte %ld ('%c' -> '%c')", k, was, b[k]);
    } else {                                      /* an aligned 8-byte field */
        long k = at / 8 * 8;
        for (int i = 0; i < 8 && k + i < size; i++) b[k + i] = (uint8_t)t_next(g);
        snprintf(what, n, "8-byte field at byte %ld", k);
    }
    fseek(f, 0, SEEK_SET);
    ck_assert_int_eq(fwrite(b, 1, (size_t)size, f), size);
    fclose(f);
    free(b);
}

/* The kill-anywhere harness's damage half: a run killed after two commits,
 * then, each time from a pristine copy of that state, one random bit flip or
 * field edit in one committed file (the journal, the journal before it, the
 * saved flags, a boundary, a sealed or staged shard), then --resume.  Every
 * one must be refused with a message or recovered to the uninterrupted
 * bytes; a resume that exits 0 with other bytes fails the test.
 * FS_FLIPS=N sets the count (default 60). */
static void flip_harness(const char *type, int nflips)
{
    rt r;
    if (!setup(&r, type, "")) return;
    char out[4300], pristine[4300], why[9000], what[200], names[64][4400];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    snprintf(pristine, sizeof pristine, "%s/pristine", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert_int_eq(run("cp -a '%s' '%s'", out, pristine), 0);
    const int nf = committed_files(out, names, 64);
    ck_assert_int_ge(nf, 6);
    const char *env = getenv("FS_FLIPS");
    if (env && atoi(env) > 0) nflips = atoi(env);
    t_rng g = {0x5eed};
    int recovered = 0, refused = 0, per_file[64] = {0};
    for (int i = 0; i < nflips; i++) {
        ck_assert_int_eq(run("rm -rf '%s' && cp -a '%s' '%s'", out, pristine, out), 0);
        const int k = (int)(t_next(&g) % (uint32_t)nf);
        damage(names[k], &g, what, sizeof what);
        int code = run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out);
        if (code == 0) {
            ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s, %s: resumed with exit 0 but %s", names[k], what, why);
            recovered++;
        } else {
            ck_assert_msg((code == 1 || code == 2) && strstr(err, "forge-stream: error: ") &&
                          !strstr(err, "forge-stream: error: \n"), "%s, %s: exit %d: %s", names[k], what, code, err);
            refused++;
        }
        per_file[k]++;
    }
    /* resealed edits (the journal rewritten with a valid checksum): layers_done one more or one less */
    for (int d = -1; d <= 1; d += 2) {
        ck_assert_int_eq(run("rm -rf '%s' && cp -a '%s' '%s'", out, pristine, out), 0);
        char jp[4400];
        snprintf(jp, sizeof jp, "%s/.forge-work/journal.json", out);
        json_t *j = json_load_file(jp, 0, NULL);
        ck_assert_ptr_nonnull(j);
        json_object_del(j, "checksum");
        json_object_set_new(j, "layers_done", json_integer(json_integer_value(json_object_get(j, "layers_done")) + d));
        char *text = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
        write_sealed(jp, text);
        free(text);
        json_decref(j);
        int code = run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out);
        ck_assert_msg(code != 0 || same_tree(r.ref, out, why, sizeof why), "layers_done %+d resealed: exit 0 but %s", d, why);
        ck_assert_msg(code == 0 || strstr(err, "forge-stream: error: "), "layers_done %+d: exit %d: %s", d, code, err);
        code == 0 ? recovered++ : refused++;
    }
    printf("check_resume: %s: %d damaged committed files (%d files), %d recovered to the uninterrupted bytes, %d refused "
           "with a message, 0 silent differences\n", type, nflips + 2, nf, recovered, refused);
    teardown(&r);
}

START_TEST(flipped_bits_and_edited_fields) { flip_harness("llama", 60); }
END_TEST
START_TEST(flipped_bits_and_edited_fields_moe) { flip_harness("qwen3_moe", 24); }
END_TEST

START_TEST(changed_inputs_refused)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], path[4400];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    /* the same command again: pointed at --resume */
    ck_assert_int_eq(run("'%s' quantize %s --out '%s'", r.bin, r.flags, out), 2);
    ck_assert_msg(strstr(err, "holds an unfinished run") && strstr(err, "--resume --work"), "%s", err);
    /* flags that would change the output */
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work' --bits 3", r.bin, out), 2);
    ck_assert_msg(strstr(err, "--bits 3 conflicts"), "%s", err);
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work' --act-order", r.bin, out), 2);
    ck_assert_msg(strstr(err, "--act-order conflicts"), "%s", err);
    /* cpu-async: never what auto picks (cpu here, cuda where a GPU is), so a conflict on both */
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work' --backend cpu-async", r.bin, out), 2);
    ck_assert_msg(strstr(err, "--backend"), "%s", err);
    /* a work folder in use */
    int fd = -1;
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    snprintf(path, sizeof path, "%s/.forge-work", out);
    ck_assert_int_eq(fs_lock_folder(&ctx, path, &fd), FS_OK);
    ck_assert_int_eq(run("'%s' --resume --work '%s'", r.bin, path), 2);
    char pid[32];
    snprintf(pid, sizeof pid, "process %ld", (long)getpid());
    ck_assert_msg(strstr(err, pid), "%s", err);
    close(fd);
    /* a model file changed between the run and the resume */
    snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", r.model);
    flip_byte(path, 3);
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work'", r.bin, out), 2);
    ck_assert_msg(strstr(err, "model-00002-of-00002.safetensors changed since the run started"), "%s", err);
    teardown(&r);
}
END_TEST

/* Runs cmd (a shell command line ending in the binary's arguments) in the
 * background with FORGE_STREAM_CRASH_SIGNAL=19 (SIGSTOP) at `point`, and
 * returns the pid once the process has stopped there, holding its locks
 * (0 when it did not stop within 60 s). */
static pid_t start_stopped(const rt *r, const char *point, const char *cmd)
{
    char pidf[4400];
    snprintf(pidf, sizeof pidf, "%s/pid", r->tmp);
    unlink(pidf);
    run("FORGE_STREAM_CRASH_SIGNAL=19 FORGE_STREAM_CRASH_AT='%s' %s > /dev/null 2>&1 & echo $! > '%s'", point, cmd, pidf);
    FILE *f = fopen(pidf, "r");
    long pid = 0;
    if (!f || fscanf(f, "%ld", &pid) != 1) pid = 0;
    if (f) fclose(f);
    for (int i = 0; pid > 0 && i < 600; i++) {
        char sp[64], st[512] = "";
        snprintf(sp, sizeof sp, "/proc/%ld/stat", pid);
        FILE *s = fopen(sp, "r");
        size_t k = s ? fread(st, 1, sizeof st - 1, s) : 0;
        if (s) fclose(s);
        st[k] = '\0';
        const char *rp = strrchr(st, ')');
        if (rp && rp[1] == ' ' && rp[2] == 'T') return (pid_t)pid;
        usleep(100000);
    }
    return 0;
}

/* Continues a stopped run and waits until it has exited. */
static void continue_run(pid_t pid)
{
    kill(pid, SIGCONT);
    for (int i = 0; i < 1200 && kill(pid, 0) == 0; i++) usleep(50000);
}

/* Every entry of dir, sorted, one per line, into buf (to see that nothing
 * was deleted). */
static void list_dir(const char *dir, char *buf, size_t n)
{
    char cmd[4400];
    snprintf(cmd, sizeof cmd, "ls -A '%s'", dir);
    FILE *p = popen(cmd, "r");
    size_t k = p ? fread(buf, 1, n - 1, p) : 0;
    buf[k] = '\0';
    if (p) pclose(p);
}

/* --overwrite against a live run: the lock is met before anything is
 * deleted, the second command exits 2 naming the folder in use, and the live
 * run, continued, writes the reference bytes.  A run given another work
 * folder but the same --out is refused the same way. */
START_TEST(overwrite_against_live_run)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000], cmd[16000], before[8192], after[8192];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    snprintf(cmd, sizeof cmd, "'%.2000s' quantize %.9000s --out '%s' --quiet", r.bin, r.flags, out);
    pid_t pid = start_stopped(&r, "committed:2", cmd);
    ck_assert_msg(pid > 0, "the run did not stop at its second commit");
    list_dir(out, before, sizeof before);
    ck_assert_msg(strstr(before, ".shard-"), "no staged shard in %s: %s", out, before);
    int c1 = run("'%s' quantize %s --out '%s' --overwrite", r.bin, r.flags, out);
    list_dir(out, after, sizeof after);
    int c2 = run("'%s' quantize %s --out '%s' --work '%s/w2' --overwrite", r.bin, r.flags, out, r.tmp);
    char e2[4096];
    snprintf(e2, sizeof e2, "%.4000s", err);
    continue_run(pid);
    ck_assert_msg(c1 == 2 && strcmp(before, after) == 0, "--overwrite of a live run: exit %d; before:\n%s\nafter:\n%s",
                  c1, before, after);
    ck_assert_msg(c2 == 2 && strstr(e2, "in use"), "another work folder, same --out: exit %d: %s", c2, e2);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "the live run's output: %s", why);
    teardown(&r);
}
END_TEST

/* Two copies of one work folder resumed at once: the second is refused
 * (they write the same --out), the first completes byte-identical. */
START_TEST(two_copies_of_a_work_folder)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000], cmd[16000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert_int_eq(run("cp -a '%s/.forge-work' '%s/copy'", out, r.tmp), 0);
    snprintf(cmd, sizeof cmd, "'%.2000s' --resume --work '%s/.forge-work' --quiet", r.bin, out);
    pid_t pid = start_stopped(&r, "gptq:3", cmd);
    ck_assert_msg(pid > 0, "the resume did not stop");
    int c = run("'%s' --resume --work '%s/copy'", r.bin, r.tmp);
    char e[4096];
    snprintf(e, sizeof e, "%.4000s", err);
    continue_run(pid);
    ck_assert_msg(c == 2 && strstr(e, "in use"), "the copy: exit %d: %s", c, e);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* Flips one bit in the middle of tensor `name` of the model folder (found
 * through the index and the shard's header) and returns the shard's path and
 * the byte's offset; the file keeps its size, header and last 64 KiB when
 * the tensor lies before them. */
static long poke_bytes(const char *model, const char *name, char *shard, size_t n, int nan);
static long poke_tensor(const char *model, const char *name, char *shard, size_t n)
{
    return poke_bytes(model, name, shard, n, 0);
}

/* nan: the 4 aligned bytes at the middle set to 0xFF (a NaN in F32, BF16 and
 * F16 alike) instead of one bit flipped. */
static long poke_bytes(const char *model, const char *name, char *shard, size_t n, int nan)
{
    char ip[4400];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", model);
    json_t *ix = json_load_file(ip, 0, NULL);
    const char *file = json_string_value(json_object_get(json_object_get(ix, "weight_map"), name));
    ck_assert_msg(file != NULL, "%s: no %s in the index", model, name);
    snprintf(shard, n, "%s/%s", model, file);
    json_decref(ix);
    FILE *f = fopen(shard, "r+b");
    ck_assert_ptr_nonnull(f);
    uint8_t lb[8];
    ck_assert_int_eq(fread(lb, 1, 8, f), 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = hl << 8 | lb[i];
    char *h = malloc(hl + 1);
    ck_assert_int_eq(fread(h, 1, hl, f), hl);
    h[hl] = '\0';
    json_t *hj = json_loads(h, 0, NULL), *off = json_object_get(json_object_get(hj, name), "data_offsets");
    long b0 = json_integer_value(json_array_get(off, 0)), b1 = json_integer_value(json_array_get(off, 1));
    long at = 8 + (long)hl + b0 + (b1 - b0) / 2 / 4 * 4;
    json_decref(hj);
    free(h);
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    if (nan) fwrite("\xff\xff\xff\xff", 1, 4, f);
    else fputc(c ^ 0x04, f);
    fclose(f);
    return at;
}

/* A model changed between a kill and the resume, in the middle of a shard
 * (not its header nor its last 64 KiB): refused, because the file's times
 * changed; --verify-model proves which layer changed (a layer the run read:
 * refused) or that only unread parts did (then the resumed output is the
 * fresh run's on the model as it is now).  A file only touched, or the model
 * copied to another folder: --verify-model, then the reference bytes. */
START_TEST(changed_model_mid_shard)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000], shard[4600], orig[4300], fresh[4300];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    snprintf(orig, sizeof orig, "%s/model.orig", r.tmp);
    snprintf(fresh, sizeof fresh, "%s/fresh", r.tmp);
    ck_assert_int_eq(run("cp -a '%s' '%s'", r.model, orig), 0);
    /* a tensor of layer 0, read before the kill */
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    long at = poke_tensor(r.model, "model.layers.0.mlp.down_proj.weight", shard, sizeof shard);
    struct stat sb;
    ck_assert_int_eq(stat(shard, &sb), 0);
    ck_assert_msg(at > 4096 && at < sb.st_size - 65536, "the poked byte (%ld of %lld) is not in the middle", at,
                  (long long)sb.st_size);
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work'", r.bin, out), 2);
    ck_assert_msg(strstr(err, "was written since the run started") && strstr(err, "--verify-model"), "%s", err);
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work' --verify-model", r.bin, out), 2);
    ck_assert_msg(strstr(err, "a tensor of model.layers.0 ") && strstr(err, "not what the run read"), "%s", err);
    /* a tensor of layer 2, not read yet: the run goes on with the model as it is now */
    run("rm -rf '%s' '%s' && cp -a '%s' '%s'", out, r.model, orig, r.model);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    poke_tensor(r.model, "model.layers.2.mlp.down_proj.weight", shard, sizeof shard);
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work'", r.bin, out), 2);
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --verify-model --quiet", r.bin, out) == 0, "%s", err);
    ck_assert_msg(run("'%s' quantize %s --out '%s' --quiet", r.bin, r.flags, fresh) == 0, "%s", err);
    ck_assert_msg(same_tree(fresh, out, why, sizeof why), "resumed on the changed model: %s", why);
    ck_assert_msg(!same_tree(r.ref, out, why, sizeof why), "the change made no difference: the test proves nothing");
    /* touched only, then copied elsewhere: the same bytes */
    run("rm -rf '%s' '%s' && cp -a '%s' '%s'", out, r.model, orig, r.model);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    run("touch '%s'", shard);
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work'", r.bin, out), 2);
    ck_assert_msg(strstr(err, "modification time"), "%s", err);
    ck_assert_int_eq(run("cp -r '%s' '%s/copy'", r.model, r.tmp), 0);
    ck_assert_int_eq(run("'%s' --resume --work '%s/.forge-work' --model '%s/copy'", r.bin, out, r.tmp), 2);
    ck_assert_msg(strstr(err, "is another file now"), "%s", err);
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --model '%s/copy' --verify-model", r.bin, out, r.tmp) == 0,
                  "%s", err);
    ck_assert_msg(strstr(err, "--model moved since the run started") && strstr(err, "is unchanged"), "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* NaN weights in a layer the run reaches late: found when that layer is
 * read (exit 2, naming the tensor), the committed layers kept, and the hint
 * says to repair the file and resume with --verify-model; once the shard is
 * repaired, that resume ends with the reference bytes. */
START_TEST(nan_weights_then_repair)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000], shard[4600], orig[4300];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    snprintf(orig, sizeof orig, "%s/model.orig", r.tmp);
    ck_assert_int_eq(run("cp -a '%s' '%s'", r.model, orig), 0);
    poke_bytes(r.model, "model.layers.2.mlp.up_proj.weight", shard, sizeof shard, 1);
    int code = run("'%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out);
    ck_assert_msg(code == 2 && strstr(err, "model.layers.2.mlp.up_proj.weight") && strstr(err, "--verify-model"),
                  "exit %d: %s", code, err);
    ck_assert_msg(strstr(err, "2 layer(s) are committed"), "%s", err);
    ck_assert_int_eq(run("cp -a '%s'/*.safetensors '%s'/", orig, r.model), 0);   /* repaired */
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --verify-model --quiet", r.bin, out) == 0, "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* Named pipes in the work folder in place of the journal, the saved flags or
 * a boundary never hang a resume: the journal is "not a regular file" (exit
 * 2); a boundary that is one is not trusted (one layer recomputed). */
START_TEST(named_pipes_in_the_work_folder)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert_int_eq(run("cd '%s/.forge-work' && mv journal.json j.keep && mkfifo journal.json", out), 0);
    int code = run("timeout 20 '%s' --resume --work '%s/.forge-work'", r.bin, out);
    ck_assert_msg(code == 2 && strstr(err, "journal.json: not a regular file (a named pipe)"), "exit %d: %s", code, err);
    ck_assert_int_eq(run("cd '%s/.forge-work' && rm journal.json && mv j.keep journal.json && rm act-0002.fsa && "
                         "mkfifo act-0002.fsa", out), 0);
    code = run("timeout 20 '%s' --resume --work '%s/.forge-work'", r.bin, out);
    ck_assert_msg(code == 0 && strstr(err, "recomputing from model.layers.1"), "exit %d: %s", code, err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* The crash points and fault hooks exist in test builds only: the product
 * binary (FS_BIN_RELEASE, bin/forge-stream) runs to the end with them set. */
START_TEST(release_binary_has_no_hooks)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    const char *rel = getenv("FS_BIN_RELEASE");
    ck_assert_msg(rel != NULL, "FS_BIN_RELEASE unset: run the suites through make test");
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    int code = run("FORGE_STREAM_CRASH_AT=committed:1 FORGE_STREAM_FAIL_AT=act-write:1 FORGE_STREAM_CRASH_REPORT=1 "
                   "'%s' quantize %s --out '%s' --quiet", rel, r.flags, out);
    ck_assert_msg(code == 0 && !strstr(err, "crash point"), "exit %d: %s", code, err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* The CPU bytes depend on the BLAS kernels OpenBLAS picks for the CPU (the
 * demo's GPTQ perplexity moves by 0.3% between them): a resume under other
 * kernels is refused, naming both and how to get the run's back
 * (OPENBLAS_CORETYPE), and with the run's kernels it ends with the bytes of
 * an uninterrupted run on them. */
START_TEST(other_blas_kernels_refused)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], ref2[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    snprintf(ref2, sizeof ref2, "%s/ref-haswell", r.tmp);
    ck_assert_msg(run("OPENBLAS_CORETYPE=Haswell '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, ref2) == 0, "%s", err);
    ck_assert(killed(run("OPENBLAS_CORETYPE=Haswell FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet",
                         r.bin, r.flags, out)));
    int code = run("OPENBLAS_CORETYPE=Sandybridge '%s' --resume --work '%s/.forge-work'", r.bin, out);
    if (code == 0 && !strstr(err, "kernels")) {
        printf("check_resume: this OpenBLAS does not take OPENBLAS_CORETYPE (no DYNAMIC_ARCH): kernel check skipped\n");
        teardown(&r);
        return;
    }
    ck_assert_msg(code == 2 && strstr(err, "Haswell kernels") && strstr(err, "OPENBLAS_CORETYPE=Haswell"), "exit %d: %s",
                  code, err);
    ck_assert_msg(run("OPENBLAS_CORETYPE=Haswell '%s' --resume --work '%s/.forge-work' --quiet", r.bin, out) == 0, "%s", err);
    ck_assert_msg(same_tree(ref2, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* The journal names the device (fs_backend_device); a resume on another one
 * (the test hook FORGE_STREAM_TEST_DEVICE plays a GPU) is refused with exit 2
 * naming both, before anything changes; with --allow-device-change it goes
 * on, warning that the bytes may differ (here they do not: the same CPU
 * computes them). */
#define FAKE_GPU "cuda: NVIDIA Test GPU (sm_90), CUDA runtime 12.4, driver 12.4, cuBLAS 120403"
START_TEST(other_device_refused)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000], j0[4400], j1[4400];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert_msg(run("grep -q '\"device\":\"' '%s/.forge-work/journal.json'", out) == 0, "no device in the journal");
    ck_assert_int_eq(run("grep -q 'NVIDIA Test GPU' '%s/.forge-work/journal.json'", out), 1);
    snprintf(j0, sizeof j0, "%s/journal-before.json", r.tmp);
    snprintf(j1, sizeof j1, "%s/.forge-work/journal.json", out);
    ck_assert_int_eq(run("cp '%s' '%s'", j1, j0), 0);
    int code = run("FORGE_STREAM_TEST_DEVICE='" FAKE_GPU "' '%s' --resume --work '%s/.forge-work'", r.bin, out);
    ck_assert_msg(code == 2 && strstr(err, "the run ran on [") && strstr(err, "NVIDIA Test GPU") &&
                  strstr(err, "--allow-device-change"), "exit %d: %s", code, err);
    ck_assert_msg(strstr(err, "kernels)") || strstr(err, "cuda: "), "the run's device is not named: %s", err);
    ck_assert_msg(run("cmp -s '%s' '%s'", j0, j1) == 0, "the refused resume changed the journal");
    code = run("FORGE_STREAM_TEST_DEVICE='" FAKE_GPU "' '%s' --resume --work '%s/.forge-work' --allow-device-change",
               r.bin, out);
    ck_assert_msg(code == 0 && strstr(err, "--allow-device-change): the bytes may differ"), "exit %d: %s", code, err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* A folder other than /tmp's file system, when there is one (/dev/shm). */
static int other_disk(const char *tmp, char *dir, size_t n)
{
    struct stat a, b;
    if (stat(tmp, &a) != 0 || stat("/dev/shm", &b) != 0 || a.st_dev == b.st_dev) return 0;
    snprintf(dir, n, "/dev/shm/fs-moved-%ld", (long)getpid());
    return mkdir(dir, 0755) == 0;
}

/* The work folder (and its output folder) moved to another disk after a
 * kill, as one does after a full disk: the default work folder finds its
 * output beside it; a separate one is told the recorded --out is gone, with
 * a message saying so, and follows --out given again; both finish with the
 * reference bytes. */
START_TEST(moved_work_folder)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000], dst[4300];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    int shm = other_disk(r.tmp, dst, sizeof dst);
    if (!shm) snprintf(dst, sizeof dst, "%s/elsewhere", r.tmp);
    if (!shm) ck_assert_int_eq(mkdir(dst, 0755), 0);
    printf("check_resume: moving work folders to %s (%s)\n", dst, shm ? "another file system" : "the same file system");
    /* the default work folder, inside --out: both move */
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out)));
    ck_assert_int_eq(run("mv '%s' '%s/o1'", out, dst), 0);
    ck_assert_msg(run("'%s' --resume --work '%s/o1/.forge-work'", r.bin, dst) == 0, "%s", err);
    ck_assert_msg(strstr(err, "--out moved since the run started"), "%s", err);
    char o1[4400];
    snprintf(o1, sizeof o1, "%s/o1", dst);
    ck_assert_msg(same_tree(r.ref, o1, why, sizeof why), "%s", why);
    ck_assert_msg(access(out, F_OK) != 0, "%s was written again", out);
    /* a separate work folder moved with its output folder */
    char w[4400];
    snprintf(w, sizeof w, "%s/w", r.tmp);
    ck_assert(killed(run("FORGE_STREAM_CRASH_AT=committed:2 '%s' quantize %s --out '%s' --work '%s' --quiet", r.bin,
                         r.flags, out, w)));
    ck_assert_int_eq(run("mv '%s' '%s/w2' && mv '%s' '%s/o2'", w, dst, out, dst), 0);
    ck_assert_int_eq(run("'%s' --resume --work '%s/w2'", r.bin, dst), 2);
    ck_assert_msg(strstr(err, out) && strstr(err, "--out NEW") && !strstr(err, "error: \n"), "%s", err);
    ck_assert_msg(run("'%s' --resume --work '%s/w2' --out '%s/o2' --quiet", r.bin, dst, dst) == 0, "%s", err);
    snprintf(o1, sizeof o1, "%s/o2", dst);
    ck_assert_msg(same_tree(r.ref, o1, why, sizeof why), "%s", why);
    run("rm -rf '%s'", dst);
    teardown(&r);
}
END_TEST

/* Writes text sealed the way specifications.md §16 says (the checksum of the
 * text as the last key), with xxhash itself rather than the product's code. */
static void write_sealed(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    size_t n = strlen(text);
    if (n >= 2 && text[n - 1] == '}')
        fprintf(f, "%.*s,\"checksum\":\"%016llx\"}", (int)(n - 1), text, (unsigned long long)XXH3_64bits(text, n));
    else
        fputs(text, f);
    fclose(f);
}

/* Malformed journals: refused with exit 2, naming the file and the key
 * (sealed ones whose keys are wrong), or as damaged (text that is not
 * sealed, or whose seal does not match). */
START_TEST(malformed_journal)
{
    const char *bin = getenv("FS_BIN");
    ck_assert_msg(bin != NULL, "FS_BIN unset: run the suites through make test");
    char *tmp = t_tmpdir(), path[4300];
    snprintf(path, sizeof path, "%s/journal.json", tmp);
    static const char good_tail[] = "\"argv\":[],\"config\":{},\"backend\":\"cpu\",\"model\":{\"dir\":\"/m\",\"files\":[]},"
        "\"calib\":{\"path\":\"/c\",\"size\":1,\"xxh3\":\"0123456789abcdef\",\"ids_xxh3\":\"0123456789abcdef\"},"
        "\"layers_done\":1,\"sealed\":false,";
    struct { const char *name, *text, *want; int seal; } cases[] = {
        {"empty", "", "damaged", 0},
        {"truncated", "{\"format\":\"forge-stream-journal\",\"vers", "damaged", 0},
        {"unsealed", "{\"format\":\"forge-stream-journal\",\"version\":2}", "damaged", 0},
        {"not an object", "[1,2]", "damaged", 1},
        {"wrong format", "{\"format\":\"other\",\"version\":2}", "'format'", 1},
        {"future version", "{\"format\":\"forge-stream-journal\",\"version\":9}", "version 9", 1},
        {"no argv", "{\"format\":\"forge-stream-journal\",\"version\":2}", "'argv'", 1},
        {"act escapes", NULL, "'act.file'", 1},
        {"act bad checksum", NULL, "'act'", 1},
        {"no output", NULL, "'output'", 1},
        {"an older version's", "{\"format\":\"forge-stream-journal\",\"version\":1,\"argv\":[]}", "journal version 1", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[2000];
        if (i == 7) snprintf(text, sizeof text, "{\"format\":\"forge-stream-journal\",\"version\":2,%s\"act\":{\"file\":\"../x\","
                             "\"rows\":1,\"row_bytes\":2,\"checksum\":\"0123456789abcdef\"},\"output\":{},\"moe\":[],\"layers\":[]}", good_tail);
        else if (i == 8) snprintf(text, sizeof text, "{\"format\":\"forge-stream-journal\",\"version\":2,%s\"act\":{\"file\":\"a\","
                                  "\"rows\":1,\"row_bytes\":2,\"checksum\":\"xyz\"},\"output\":{},\"moe\":[],\"layers\":[]}", good_tail);
        else if (i == 9) snprintf(text, sizeof text, "{\"format\":\"forge-stream-journal\",\"version\":2,%s\"act\":null,"
                                  "\"moe\":[],\"layers\":[]}", good_tail);
        else snprintf(text, sizeof text, "%s", cases[i].text);
        if (cases[i].seal) write_sealed(path, text);
        else {
            FILE *f = fopen(path, "w");
            fputs(text, f);
            fclose(f);
        }
        int code = run("'%s' --resume --work '%s'", bin, tmp);
        ck_assert_msg(code == 2, "%s: exit %d: %s", cases[i].name, code, err);
        ck_assert_msg(strstr(err, "journal.json") && strstr(err, cases[i].want), "%s: %s", cases[i].name, err);
        run("rm -f '%s'/journal.damaged.json", tmp);
    }
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

/* A write that fails for lack of space (RLIMIT_FSIZE: writes past the limit
 * fail with EFBIG once SIGXFSZ is ignored) stops the run with a message
 * naming the file and the space the run needs; --resume then completes it. */
START_TEST(full_disk_then_resume)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    int code = run("trap '' XFSZ; ulimit -f 40 && '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out);
    if (code == 0) {
        printf("check_resume: RLIMIT_FSIZE did not limit writes here, full-disk test skipped\n");
        teardown(&r);
        return;
    }
    ck_assert_msg(code == 1, "exit %d: %s", code, err);
    ck_assert_msg(strstr(err, out) && (strstr(err, "file size limit exceeded") || strstr(err, "no space")), "%s", err);
    ck_assert_msg(strstr(err, "needs about") && strstr(err, "--resume --work"), "%s", err);
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out) == 0, "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

/* A real full disk when the test may mount a small tmpfs (root with
 * CAP_SYS_ADMIN).  The pre-flight check refuses a disk that obviously cannot
 * hold the run.  A disk that fills up during the run (here: another file
 * takes all but `left` bytes while the run is stopped, and --resume skips the
 * pre-flight) fails with ENOSPC naming the file; once the space is freed,
 * --resume completes it byte-identical.  Sweeping `left` makes the write
 * that fails an output staging file, an activation boundary and the journal
 * in turn. */
START_TEST(enospc_on_tmpfs_then_resume)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char mnt[4300], out[4400], why[9000], e0[4096], e1[4096];
    snprintf(mnt, sizeof mnt, "%s/small", r.tmp);
    ck_assert_int_eq(mkdir(mnt, 0755), 0);
    if (run("mount -t tmpfs -o size=96k tmpfs '%s'", mnt) != 0) {
        printf("check_resume: cannot mount a tmpfs here (needs root), ENOSPC test skipped (RLIMIT_FSIZE one runs)\n");
        teardown(&r);
        return;
    }
    snprintf(out, sizeof out, "%s/o", mnt);
    int c0 = run("'%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out);     /* too small: refused */
    memcpy(e0, err, sizeof e0);
    e0[sizeof e0 - 1] = '\0';
    run("umount '%s'", mnt);
    ck_assert_msg(c0 == 2 && strstr(e0, "the disk has"), "pre-flight: exit %d: %s", c0, e0);
    int hit_data = 0, hit_act = 0, hit_journal = 0;
    for (int left = 2048; left <= 90112; left += 4096) {
        ck_assert_int_eq(run("mount -t tmpfs -o size=4m tmpfs '%s'", mnt), 0);
        int ck = run("FORGE_STREAM_CRASH_AT=committed:1 '%s' quantize %s --out '%s' --quiet", r.bin, r.flags, out);
        struct statvfs sv;
        uint64_t avail = statvfs(mnt, &sv) == 0 ? (uint64_t)sv.f_bavail * sv.f_frsize : 0;
        int fill = run("head -c %llu /dev/zero > '%s/filler'", (unsigned long long)(avail > (uint64_t)left ? avail - left : 0), mnt);
        int c1 = run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out);
        memcpy(e1, err, sizeof e1);
        e1[sizeof e1 - 1] = '\0';
        run("rm -f '%s/filler'", mnt);               /* space freed */
        int c2 = run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out);
        int same = c2 == 0 && same_tree(r.ref, out, why, sizeof why);
        run("umount '%s'", mnt);
        ck_assert(killed(ck));
        ck_assert_int_eq(fill, 0);
        if (c1 == 0) break;                          /* enough room left: the run completed */
        ck_assert_msg(c1 == 1, "left %d: exit %d: %s", left, c1, e1);
        ck_assert_msg(strstr(e1, "no space left on device while writing") && strstr(e1, out), "left %d: %s", left, e1);
        ck_assert_msg(strstr(e1, "needs about") && strstr(e1, "--resume --work"), "left %d: %s", left, e1);
        hit_data += strstr(e1, ".data") != NULL;
        hit_act += strstr(e1, "act-0002.fsa") != NULL;
        hit_journal += strstr(e1, "journal.json") != NULL;
        ck_assert_msg(c2 == 0, "left %d: resume: %s", left, err);
        ck_assert_msg(same, "left %d: %s", left, why);
    }
    ck_assert_msg(hit_data && hit_act && hit_journal, "failed writes: staging %d, boundary %d, journal %d", hit_data,
                  hit_act, hit_journal);
    teardown(&r);
}
END_TEST

/* EIO (injected: FORGE_STREAM_FAIL_AT, src/core/core.h) while writing an output tensor,
 * sealing a shard, writing a boundary and committing the journal: exit 1
 * naming the file, state kept, --resume completes it byte-identical. */
START_TEST(eio_then_resume)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    const char *pts[][2] = {{"tensor-write:30", ".shard-00001.data"}, {"shard-write:2", ".shard-00001.partial"},
                            {"act-write:2", "act-0001.fsa"}, {"atomic-write:3", "journal.json"}};
    for (size_t i = 0; i < sizeof pts / sizeof *pts; i++) {
        run("rm -rf '%s'", out);
        int c1 = run("FORGE_STREAM_FAIL_AT=%s '%s' quantize %s --out '%s' --quiet", pts[i][0], r.bin, r.flags, out);
        ck_assert_msg(c1 == 1, "%s: exit %d: %s", pts[i][0], c1, err);
        ck_assert_msg(strstr(err, pts[i][1]) && strstr(err, "Input/output error") && strstr(err, "--resume --work"),
                      "%s: %s", pts[i][0], err);
        ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out) == 0, "%s: %s", pts[i][0], err);
        ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s: %s", pts[i][0], why);
    }
    teardown(&r);
}
END_TEST

START_TEST(sigterm_then_resume)
{
    rt r;
    if (!setup(&r, "llama", "")) return;
    char out[4300], why[9000];
    snprintf(out, sizeof out, "%s/o", r.tmp);
    int code = run("FORGE_STREAM_CRASH_SIGNAL=15 FORGE_STREAM_CRASH_AT=gptq:10 '%s' quantize %s --out '%s'", r.bin,
                   r.flags, out);
    ck_assert_msg(code == 143, "exit %d: %s", code, err);
    ck_assert_msg(strstr(err, "signal 15") && strstr(err, "--resume --work"), "%s", err);
    ck_assert_msg(run("'%s' --resume --work '%s/.forge-work' --quiet", r.bin, out) == 0, "%s", err);
    ck_assert_msg(same_tree(r.ref, out, why, sizeof why), "%s", why);
    teardown(&r);
}
END_TEST

Suite *fs_suite_resume(void)
{
    Suite *s = suite_create("resume");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, kill_anywhere_dense);
    tcase_add_test(tc, kill_anywhere_moe);
    tcase_add_test(tc, kill_anywhere_deepseek);
    tcase_add_test(tc, kill_anywhere_rtn_without_calibration);
    tcase_add_test(tc, kill_anywhere_other_options);
    tcase_add_test(tc, kill_anywhere_spilled_dense);
    tcase_add_test(tc, kill_anywhere_spilled_moe);
    tcase_add_test(tc, killed_twice);
    tcase_add_test(tc, killed_before_first_commit);
    tcase_add_test(tc, corrupted_files_recomputed);
    tcase_add_test(tc, changed_inputs_refused);
    tcase_add_test(tc, malformed_journal);
    tcase_add_test(tc, full_disk_then_resume);
    tcase_add_test(tc, enospc_on_tmpfs_then_resume);
    tcase_add_test(tc, sigterm_then_resume);
    tcase_add_test(tc, eio_then_resume);
    suite_add_tcase(s, tc);
    TCase *ta = tcase_create("async");            /* CK_RUN_CASE=async */
    tcase_set_timeout(ta, 900);
    tcase_add_test(ta, kill_anywhere_dense_async);
    tcase_add_test(ta, kill_anywhere_moe_async);
    tcase_add_test(ta, kill_anywhere_deepseek_async);
    tcase_add_test(ta, kill_anywhere_spilled_async);
    suite_add_tcase(s, ta);
    TCase *tl = tcase_create("locks");            /* CK_RUN_CASE=locks */
    tcase_set_timeout(tl, 300);
    tcase_add_test(tl, overwrite_against_live_run);
    tcase_add_test(tl, two_copies_of_a_work_folder);
    suite_add_tcase(s, tl);
    TCase *ti = tcase_create("inputs");           /* CK_RUN_CASE=inputs */
    tcase_set_timeout(ti, 300);
    tcase_add_test(ti, changed_model_mid_shard);
    tcase_add_test(ti, moved_work_folder);
    tcase_add_test(ti, nan_weights_then_repair);
    tcase_add_test(ti, named_pipes_in_the_work_folder);
    tcase_add_test(ti, release_binary_has_no_hooks);
    tcase_add_test(ti, other_blas_kernels_refused);
    tcase_add_test(ti, other_device_refused);
    suite_add_tcase(s, ti);
    TCase *td = tcase_create("damage");           /* CK_RUN_CASE=damage */
    tcase_set_timeout(td, 900);
    tcase_add_test(td, flipped_bits_and_edited_fields);
    tcase_add_test(td, flipped_bits_and_edited_fields_moe);
    suite_add_tcase(s, td);
    return s;
}
