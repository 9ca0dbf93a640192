/* run.c: runs every Check suite; exit status non-zero on any failure.
 *
 * Invariants:
 *  1. No CUDA call happens in this process before the last fork: building a
 *     suite calls nothing of CUDA, the forked suites run first, and the CUDA
 *     suite runs last in its own runner without fork (a CUDA context does not
 *     survive a fork: in a child every device call fails, and the parity
 *     tests would return as passes).
 *  2. A CUDA test without a device is a skip, counted and printed as such;
 *     FS_REQUIRE_CUDA=1 (tools/gpu-check.sh) makes any skip a failure.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/util.h"

char *t_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char *p = malloc(4096);
    snprintf(p, 4096, "%s/fs-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(p)) { free(p); return NULL; }
    return p;
}

void t_rmdir(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", dir);
}

/* Check itself filters: CK_RUN_SUITE=grid or CK_RUN_CASE=... run a part. */
int main(void)
{
    Suite *(*suites[])(void) = {
        fs_suite_dtype, fs_suite_qmeta, fs_suite_ops, fs_suite_backend, fs_suite_grid, fs_suite_hessian, fs_suite_gptq, fs_suite_refine,
        fs_suite_safetensors, fs_suite_ckpt, fs_suite_pack, fs_suite_roundtrip, fs_suite_actcache, fs_suite_prefetch, fs_suite_pipeline, fs_suite_moe, fs_suite_deepseek, fs_suite_plan,
        fs_suite_writer, fs_suite_trace, fs_suite_resume, fs_suite_spill, fs_suite_async, fs_suite_solve,
        fs_suite_tokenizer, fs_suite_kl, fs_suite_cli, fs_suite_serve, fs_suite_fuzz,
    };
    SRunner *sr = srunner_create(NULL);
    for (size_t i = 0; i < sizeof suites / sizeof suites[0]; i++) srunner_add_suite(sr, suites[i]());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);

    /* invariant 1: last, in this process */
    SRunner *cu = srunner_create(fs_suite_cuda());
    srunner_set_fork_status(cu, CK_NOFORK);
    srunner_run_all(cu, CK_NORMAL);
    failed += srunner_ntests_failed(cu);
    const int ran = srunner_ntests_run(cu), skipped = fs_cuda_tests_skipped();
    srunner_free(cu);
    if (skipped > 0) {
        const char *req = getenv("FS_REQUIRE_CUDA");
        const int required = req && strcmp(req, "1") == 0;
        printf("cuda: %d of %d tests SKIPPED (no CUDA device): they did not run%s\n", skipped, ran,
               required ? "; FS_REQUIRE_CUDA=1 makes that a failure" : "");
        if (required) failed += skipped;
    }
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
