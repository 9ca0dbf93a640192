/* check_trace.c: the profile is Chrome trace-event JSON of the documented
 * schema, spans do not overlap within a track, every recorded stage appears,
 * and the --timings lines add up to the end table's totals. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tests/util.h"
#include "src/core/trace.h"

#define SUM_TOL 1e-9   /* seconds: sums of the same doubles in another order */

typedef struct producer { fs_trace *t; fs_stage s; int n; } producer;

/* one thread per stage, spans back to back, as the pipeline records them */
static void *produce(void *arg)
{
    producer *p = arg;
    double t = fs_now();
    for (int i = 0; i < p->n; i++) {
        double t0 = t + i * 1e-3, t1 = t0 + 0.9e-3;
        fs_trace_span(p->t, p->s, i % 4, NULL, t0, t1, 1000 + (uint64_t)i, 1e6);
    }
    return NULL;
}

START_TEST(profile_schema_and_totals)
{
    char *tmp = t_tmpdir(), prof[4200], tim[4200];
    snprintf(prof, sizeof prof, "%s/trace.json", tmp);
    snprintf(tim, sizeof tim, "%s/timings.jsonl", tmp);
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    fs_trace *t = NULL;
    ck_assert_int_eq(fs_trace_new(&ctx, prof, tim, &t), FS_OK);
    fs_stage st[4] = {FS_STAGE_READ, FS_STAGE_FORWARD, FS_STAGE_GPTQ, FS_STAGE_WRITE};
    producer pr[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        pr[i] = (producer){t, st[i], 200 + 10 * i};
        pthread_create(&th[i], NULL, produce, &pr[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    char *table = NULL;
    size_t tlen = 0;
    FILE *mf = open_memstream(&table, &tlen);
    ck_assert_int_eq(fs_trace_finish(&ctx, t, 1.0, mf), FS_OK);
    fclose(mf);
    double sec[FS_STAGE_COUNT];
    uint64_t by[FS_STAGE_COUNT];
    fs_trace_totals(t, sec, by);

    /* the profile */
    json_error_t je;
    json_t *root = json_load_file(prof, 0, &je);
    ck_assert_msg(root != NULL, "%s", je.text);
    json_t *ev = json_object_get(root, "traceEvents");
    ck_assert(json_is_array(ev));
    int seen[FS_STAGE_COUNT] = {0}, named[FS_STAGE_COUNT] = {0};
    double last_end[FS_STAGE_COUNT];
    for (int s = 0; s < FS_STAGE_COUNT; s++) last_end[s] = -1;
    double dsum[FS_STAGE_COUNT] = {0};
    for (size_t i = 0; i < json_array_size(ev); i++) {
        json_t *e = json_array_get(ev, i);
        const char *ph = json_string_value(json_object_get(e, "ph"));
        int tid = (int)json_integer_value(json_object_get(e, "tid"));
        ck_assert(ph && tid >= 0 && tid < FS_STAGE_COUNT);
        ck_assert_int_eq(json_integer_value(json_object_get(e, "pid")), 1);
        if (!strcmp(ph, "M")) { named[tid] = 1; continue; }
        ck_assert_str_eq(ph, "X");
        ck_assert(json_is_string(json_object_get(e, "name")));
        double ts = json_number_value(json_object_get(e, "ts")), dur = json_number_value(json_object_get(e, "dur"));
        ck_assert(dur >= 0);
        ck_assert_msg(ts >= last_end[tid] - 1e-6, "track %d: spans overlap", tid);  /* in order, disjoint */
        last_end[tid] = ts + dur;
        json_t *args = json_object_get(e, "args");
        ck_assert(json_is_integer(json_object_get(args, "layer")) && json_is_integer(json_object_get(args, "bytes")));
        seen[tid]++;
        dsum[tid] += dur * 1e-6;
    }
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(seen[st[i]], pr[i].n);
        ck_assert(fabs(dsum[st[i]] - sec[st[i]]) < 1e-6);
    }
    for (int s = 0; s < FS_STAGE_COUNT; s++) ck_assert(named[s]);
    json_decref(root);

    /* --timings: the lines of a stage add up to its total */
    FILE *f = fopen(tim, "r");
    ck_assert_ptr_nonnull(f);
    char line[1024];
    double lsum[FS_STAGE_COUNT] = {0};
    uint64_t lby[FS_STAGE_COUNT] = {0};
    while (fgets(line, sizeof line, f)) {
        json_t *j = json_loads(line, 0, &je);
        ck_assert_msg(j != NULL, "timings line: %s", je.text);
        const char *sn = json_string_value(json_object_get(j, "stage"));
        int s = 0;
        while (s < FS_STAGE_COUNT && strcmp(fs_stage_name((fs_stage)s), sn)) s++;
        ck_assert_int_lt(s, FS_STAGE_COUNT);
        lsum[s] += json_number_value(json_object_get(j, "seconds"));
        lby[s] += (uint64_t)json_integer_value(json_object_get(j, "bytes"));
        json_decref(j);
    }
    fclose(f);
    for (int i = 0; i < 4; i++) {
        ck_assert(fabs(lsum[st[i]] - sec[st[i]]) < SUM_TOL);
        ck_assert_uint_eq(lby[st[i]], by[st[i]]);
        /* the end table names the stage with its total */
        char want[128];
        snprintf(want, sizeof want, "%-10s %10.3f", fs_stage_name(st[i]), sec[st[i]]);
        ck_assert_msg(strstr(table, want) != NULL, "table lacks '%s':\n%s", want, table);
    }
    ck_assert_ptr_nonnull(strstr(table, "overlap ratio"));
    free(table);
    fs_trace_free(t);
    t_rmdir(tmp);
    free(tmp);
}
END_TEST

START_TEST(null_trace_is_off)
{
    fs_trace_span(NULL, FS_STAGE_READ, 0, "x", 0, 1, 1, 1);   /* no crash, no effect */
    fs_ctx ctx;
    fs_ctx_init(&ctx);
    ck_assert_int_eq(fs_trace_finish(&ctx, NULL, 1.0, NULL), FS_OK);
    fs_trace_free(NULL);
}
END_TEST

Suite *fs_suite_trace(void)
{
    Suite *s = suite_create("trace");
    TCase *tc = tcase_create("trace");
    tcase_add_test(tc, profile_schema_and_totals);
    tcase_add_test(tc, null_trace_is_off);
    suite_add_tcase(s, tc);
    return s;
}
