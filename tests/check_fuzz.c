/* check_fuzz.c: a short run of the project's fuzzer (tools/fuzz.c, $FS_FUZZ)
 * over the binary under test ($FS_BIN: bin/forge-stream under make test, the
 * ASan + UBSan build under make test-asan); any finding fails the test and
 * its reproducer is kept (the path is in the failure message).  `make fuzz`
 * runs the full 10,000.
 *
 * A fuzzer that finds nothing proves nothing by itself, so the second case
 * runs it over a binary that accepts everything (a script that exits 0 on
 * the fuzzer's cases and runs the real binary for its seeds): it must report
 * findings. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/util.h"

#if defined(__SANITIZE_ADDRESS__)
#define FUZZ_CASES 120           /* under the sanitizers each case costs several times more */
#else
#define FUZZ_CASES 300           /* about 40 s on the 2-core machine */
#endif
#define FUZZ_JOBS 2              /* the machine has two cores */
#define SHAM_CASES 40            /* cases over the binary that accepts everything */

static int fuzz_env(const char **fz, const char **bin, const char **gen)
{
    *fz = getenv("FS_FUZZ");
    *bin = getenv("FS_BIN");
    *gen = getenv("FS_GEN_TINY");
    ck_assert_msg(*fz && **fz && *bin && **bin && *gen && **gen,
                  "FS_FUZZ, FS_BIN or FS_GEN_TINY unset: run the suites through make test");
    return 1;
}

static char *slurp(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return strdup("");
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, fp);
    fclose(fp);
    buf[n] = 0;
    return strdup(buf);
}

START_TEST(test_fuzz_short)
{
    const char *fz, *bin, *gen;
    if (!fuzz_env(&fz, &bin, &gen)) return;
    const char *ne = getenv("FS_FUZZ_N");
    int n = ne && atoi(ne) > 0 ? atoi(ne) : FUZZ_CASES;
    char *dir = t_tmpdir(), err[1 << 14];
    int rc = t_run_fmt(err, sizeof err, "'%s' --bin '%s' --gen-tiny '%s' --work '%s/w' --report '%s/report' --n %d "
                       "--jobs %d --quiet > '%s/figures.txt'", fz, bin, gen, dir, dir, n, FUZZ_JOBS, dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/figures.txt", dir);
    char *fig = slurp(path);
    printf("%s", fig);
    fflush(stdout);
    ck_assert_msg(rc == 0, "the fuzzer exits %d (reproducers kept in %s/report):\n%s%s", rc, dir, err, fig);
    char want[64];
    snprintf(want, sizeof want, "fuzz: %d mutated inputs", n);
    ck_assert_msg(strstr(fig, want) && strstr(fig, "findings: 0"), "figures: %s", fig);
    /* both outcomes occur, or the mutations do not reach the readers */
    ck_assert_msg(!strstr(fig, "exits: 0: 0,") && !strstr(fig, ", 2: 0,"), "one-sided exits: %s", fig);
    free(fig);
    t_rmdir(dir);
    free(dir);
}
END_TEST

START_TEST(test_fuzz_finds)
{
    const char *fz, *bin, *gen;
    if (!fuzz_env(&fz, &bin, &gen)) return;
    char *dir = t_tmpdir(), err[1 << 14], sham[4200];
    snprintf(sham, sizeof sham, "%s/accepts-everything", dir);
    FILE *fp = fopen(sham, "w");
    ck_assert_ptr_nonnull(fp);
    fprintf(fp, "#!/bin/sh\ncase \"$*\" in *'/case-'*) exit 0;; esac\nexec '%s' \"$@\"\n", bin);
    ck_assert_int_eq(fclose(fp), 0);
    ck_assert_int_eq(chmod(sham, 0755), 0);
    int rc = t_run_fmt(err, sizeof err, "'%s' --bin '%s' --gen-tiny '%s' --work '%s/w' --report '%s/report' --n %d "
                       "--jobs %d --quiet > '%s/figures.txt'", fz, sham, gen, dir, dir, SHAM_CASES, FUZZ_JOBS, dir);
    char path[4200];
    snprintf(path, sizeof path, "%s/figures.txt", dir);
    char *fig = slurp(path);
    ck_assert_msg(rc == 1, "the fuzzer exits %d over a binary that accepts everything: %s%s", rc, err, fig);
    ck_assert_msg(strstr(err, "exit 0 on an input known to be invalid") != NULL, "findings: %s", err);
    snprintf(path, sizeof path, "%s/report", dir);
    struct stat st;
    ck_assert_msg(stat(path, &st) == 0 && S_ISDIR(st.st_mode), "no report folder with the reproducers");
    free(fig);
    t_rmdir(dir);
    free(dir);
}
END_TEST

Suite *fs_suite_fuzz(void)
{
    Suite *s = suite_create("fuzz");
    TCase *tc = tcase_create("fuzz");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_fuzz_short);
    tcase_add_test(tc, test_fuzz_finds);
    suite_add_tcase(s, tc);
    return s;
}
