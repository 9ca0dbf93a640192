/* check_async.c: quantize on `--backend cpu-async` (every queue a thread,
 * every buffer memory of its own, copies and ops run only when their queue
 * reaches them: src/backend/backend.h) gives the bytes of `--backend cpu`,
 * the reference, on the four kinds of run of issue 14: a dense model, a MoE
 * model (qwen2_moe: routed experts, the shared expert behind its gate), a
 * DeepSeek-V3 model (MLA, FP8 weights, MoE with shared experts, an MTP layer)
 * and a spilled run (activations streamed from the work folder).  A missing
 * event wait, a buffer read before its upload or a host batch reused before
 * its download would show here as different bytes (and under make test-tsan
 * as a race report).  Each run is also compared with the pipeline's host
 * solver (the test hook FORGE_STREAM_TEST_SOLVER=host), so the backend
 * solver (src/quant/solve-be.h) is held to the bytes of before, with the
 * option sets of the solver (act-order, groups, sym/asym, mse grids, static
 * groups, the gptq format, damping retries, the expert policies, waves).
 * Kill-anywhere on cpu-async: check_resume.c ("async"). */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/util.h"

static char err[16384];
#define run(...) t_run_fmt(err, sizeof err, __VA_ARGS__)

/* Generates `type` (gen-tiny flags extra), quantizes it on cpu with the
 * host solver (FORGE_STREAM_TEST_SOLVER=host: the pipeline before its solve
 * moved onto the backend, src/quant/solve-be.h), then on cpu and on
 * cpu-async with the backend solver, all with flags, and compares the
 * outputs byte for byte. */
static void same_bytes(const char *type, const char *extra, const char *flags)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !getenv("FS_GEN_TINY")) {
        printf("check_async: FS_BIN/FS_GEN_TINY unset, skipped (run via make test)\n");
        return;
    }
    char *tmp = t_tmpdir(), model[4200], calib[4200], h[4200], a[4200], b[4200];
    ck_assert_ptr_nonnull(tmp);
    snprintf(model, sizeof model, "%s/model", tmp);
    snprintf(calib, sizeof calib, "%s/calib.u32", tmp);
    snprintf(h, sizeof h, "%s/host-solver", tmp);
    snprintf(a, sizeof a, "%s/cpu", tmp);
    snprintf(b, sizeof b, "%s/cpu-async", tmp);
    ck_assert_int_eq(t_gen_tiny(model, "--type %s --layers 3 %s", type, extra), 0);
    FILE *f = fopen(calib, "wb");
    ck_assert_ptr_nonnull(f);
    t_rng g = {11};
    for (int i = 0; i < 2000; i++) {
        uint32_t id = t_next(&g) % 96;
        fwrite(&id, 4, 1, f);
    }
    fclose(f);
    /* several batches per pass (--batch-tokens 64 of windows of 32), so the
     * host batch is reused while the queues may still hold the previous one */
    const char *common = "--samples 6 --seq-len 32 --batch-tokens 64 --max-shard-size 40K";
    ck_assert_msg(run("FORGE_STREAM_TEST_SOLVER=host '%s' quantize --model '%s' --calib '%s' %s %s --out '%s' "
                      "--backend cpu", bin, model, calib, common, flags, h) == 0, "%s, host solver: %s", type, err);
    ck_assert_msg(run("'%s' quantize --model '%s' --calib '%s' %s %s --out '%s' --backend cpu", bin, model, calib,
                      common, flags, a) == 0, "%s on cpu: %s", type, err);
    ck_assert_msg(run("'%s' quantize --model '%s' --calib '%s' %s %s --out '%s' --backend cpu-async", bin, model,
                      calib, common, flags, b) == 0, "%s on cpu-async: %s", type, err);
    ck_assert_msg(strstr(err, "cpu-async"), "the log does not name the backend: %s", err);
    ck_assert_msg(run("diff -r '%s' '%s'", h, a) == 0, "%s %s: the backend solver on cpu differs from the host "
                  "solver: %s", type, flags, err);
    ck_assert_msg(run("diff -r '%s' '%s'", a, b) == 0, "%s %s: cpu-async differs from cpu: %s", type, flags, err);
    printf("check_async: %s%s%s: host solver, cpu and cpu-async outputs identical\n", type, *flags ? " " : "", flags);
    t_rmdir(tmp);
    free(tmp);
}

START_TEST(dense_same_bytes) { same_bytes("llama", "", ""); }
END_TEST
START_TEST(moe_same_bytes) { same_bytes("qwen2_moe", "", "--experts-per-wave 3"); }
END_TEST
START_TEST(deepseek_fp8_same_bytes) { same_bytes("deepseek_v3", "--fp8 --mtp", ""); }
END_TEST
START_TEST(spilled_same_bytes) { same_bytes("qwen3_moe", "", "--spill always"); }
END_TEST
/* the solver's options through the whole pipeline (backend solver vs host solver) */
START_TEST(solver_options_same_bytes)
{
    same_bytes("llama", "", "--act-order --asym --group-size 32 --grid mse --static-groups");
    same_bytes("qwen2", "", "--format gptq --act-order --asym --bits 3");
    same_bytes("llama", "", "--sym --group-size -1 --bits 2 --block 8");
}
END_TEST
/* damping retries (a rank-deficient Hessian: 16 tokens for 64 columns, no damping) */
START_TEST(retries_same_bytes) { same_bytes("llama", "", "--samples 1 --seq-len 16 --damp 0 --act-order"); }
END_TEST
/* under-calibrated experts rounded to nearest, small waves; and the host path chosen for --grid hmse */
START_TEST(policies_same_bytes)
{
    same_bytes("mixtral", "", "--min-expert-tokens 40 --expert-policy rtn --experts-per-wave 2 --act-order");
    same_bytes("qwen2_moe", "", "--min-expert-tokens 40 --expert-policy shared --experts-per-wave 3");
    same_bytes("llama", "", "--grid hmse --act-order");
}
END_TEST

/* --gpu-mem on cpu-async (its buffers are the "device"): a budget below the
 * plan's minimum is exit 2 naming the figure, before the output folder
 * exists; the minimum itself gives waves of one expert (the plan says so
 * too) within the budget, and the bytes of the run without a budget. */
START_TEST(gpu_mem_waves)
{
    const char *bin = getenv("FS_BIN");
    if (!bin || !getenv("FS_GEN_TINY")) {
        printf("check_async: FS_BIN/FS_GEN_TINY unset, skipped (run via make test)\n");
        return;
    }
    char *tmp = t_tmpdir(), model[4200], calib[4200], a[4200], b[4200], flags[9000];
    ck_assert_ptr_nonnull(tmp);
    snprintf(model, sizeof model, "%s/model", tmp);
    snprintf(calib, sizeof calib, "%s/calib.u32", tmp);
    snprintf(a, sizeof a, "%s/no-budget", tmp);
    snprintf(b, sizeof b, "%s/budget", tmp);
    ck_assert_int_eq(t_gen_tiny(model, "--type mixtral --layers 3"), 0);
    FILE *f = fopen(calib, "wb");
    ck_assert_ptr_nonnull(f);
    t_rng g = {11};
    for (int i = 0; i < 2000; i++) {
        uint32_t id = t_next(&g) % 96;
        fwrite(&id, 4, 1, f);
    }
    fclose(f);
    /* one-window batches: the budget cannot shrink them (their size shapes the Hessians' sums) */
    snprintf(flags, sizeof flags, "--model '%s' --calib '%s' --samples 6 --seq-len 32 --batch-tokens 32 "
             "--max-shard-size 40K --backend cpu-async", model, calib);
    ck_assert_msg(run("'%s' quantize %s --out '%s'", bin, flags, a) == 0, "%s", err);
    ck_assert_int_eq(run("'%s' quantize %s --out '%s' --gpu-mem 10K", bin, flags, b), 2);
    const char *p = strstr(err, "of GPU memory (--gpu-mem");
    ck_assert_msg(p && strstr(err, "needs"), "%s", err);
    unsigned long long need = 0;
    const char *q = strstr(strstr(err, "needs "), " (");
    ck_assert_msg(q && sscanf(q, " (%llu bytes)", &need) == 1 && need > 10000, "%s", err);
    struct stat sb;
    ck_assert_msg(stat(b, &sb) != 0, "%s was created by a refused run", b);
    ck_assert_int_eq(run("'%s' quantize %s --out '%s' --gpu-mem %llu", bin, flags, b, need - 1), 2);
    ck_assert_msg(stat(b, &sb) != 0, "%s was created by a refused run", b);
    ck_assert_msg(run("'%s' plan --model '%s' --samples 6 --seq-len 32 --batch-tokens 32 --gpu-mem %llu > '%s/plan.txt'",
                      bin, model, need, tmp) == 0, "%s", err);
    ck_assert_msg(run("grep -q ' 4x1 ' '%s/plan.txt'", tmp) == 0, "the plan's waves at the minimum are not 4 of 1");
    ck_assert_msg(run("'%s' quantize %s --out '%s' --gpu-mem %llu", bin, flags, b, need) == 0, "%s", err);
    ck_assert_msg(strstr(err, "expert waves of 1 (") && strstr(err, "memory: peak"),
                  "waves of one expert under the minimum budget: %s", err);
    ck_assert_msg(run("diff -r '%s' '%s'", a, b) == 0, "the budget changed the bytes: %s", err);
    printf("check_async: --gpu-mem %llu (the plan's minimum) on cpu-async: 4 waves of 1 expert, same bytes\n", need);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

Suite *fs_suite_async(void)
{
    Suite *s = suite_create("async");
    TCase *tc = tcase_create("pipeline");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, dense_same_bytes);
    tcase_add_test(tc, moe_same_bytes);
    tcase_add_test(tc, deepseek_fp8_same_bytes);
    tcase_add_test(tc, spilled_same_bytes);
    tcase_add_test(tc, solver_options_same_bytes);
    tcase_add_test(tc, retries_same_bytes);
    tcase_add_test(tc, policies_same_bytes);
    tcase_add_test(tc, gpu_mem_waves);
    suite_add_tcase(s, tc);
    return s;
}
