/* eval-stats.c: the per-token figures of `forge-stream eval` (spec §11.2),
 * in double from the float logits: log-softmax of each distribution,
 * NLL = -log p(target), KL(base || model) = sum_j p_b(j) (log p_b(j) -
 * log p_m(j)), top-1 = the first index of the largest logit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/cli/eval-model.h"

fs_status fs_evstat_init(fs_ctx *ctx, fs_evstat *s, int64_t cap)
{
    memset(s, 0, sizeof *s);
    s->cap = cap;
    if (cap > 0 && !(s->kl = malloc(sizeof(double) * (size_t)cap)))
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "KL values of %lld tokens", (long long)cap);
    return FS_OK;
}

void fs_evstat_free(fs_evstat *s)
{
    free(s->kl);
    memset(s, 0, sizeof *s);
}

/* log-sum-exp of lg[V] in double, and the first index of its maximum. */
static double lse(const float *lg, int64_t V, int64_t *top)
{
    double mx = -INFINITY, s = 0.0;
    int64_t t = 0;
    for (int64_t j = 0; j < V; j++)
        if (lg[j] > mx) { mx = lg[j]; t = j; }
    for (int64_t j = 0; j < V; j++) s += exp((double)lg[j] - mx);
    *top = t;
    return mx + log(s);
}

void fs_evstat_add(fs_evstat *s, const float *lg, const float *lb, int64_t V, uint32_t target)
{
    int64_t tm, tb;
    const double zm = lse(lg, V, &tm);
    s->nll += zm - (double)lg[target];
    if (!lb) { s->n++; return; }
    const double zb = lse(lb, V, &tb);
    s->nll_base += zb - (double)lb[target];
    double kl = 0.0;
    for (int64_t j = 0; j < V; j++) {
        const double lpb = (double)lb[j] - zb, lpm = (double)lg[j] - zm;
        kl += exp(lpb) * (lpb - lpm);
    }
    const double dp = exp((double)lg[target] - zm) - exp((double)lb[target] - zb);
    const double dpt = exp((double)lg[tb] - zm) - exp((double)lb[tb] - zb);
    s->dp2 += dp * dp;
    s->dp2_top += dpt * dpt;
    s->same += tm == tb;
    if (s->n < s->cap) s->kl[s->n] = kl;
    s->n++;
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double fs_quantile_sorted(const double *v, int64_t n, double q)
{
    if (n <= 0) return NAN;
    const double pos = q * (double)(n - 1);
    int64_t i = (int64_t)floor(pos);
    if (i >= n - 1) return v[n - 1];
    return v[i] + (pos - (double)i) * (v[i + 1] - v[i]);
}

void fs_evstat_finish(fs_evstat *s, fs_evsum *o)
{
    memset(o, 0, sizeof *o);
    const int64_t n = s->n;
    o->tokens = n;
    o->nll = n ? s->nll / (double)n : NAN;
    o->ppl = exp(o->nll);
    if (!s->kl) return;
    const int64_t k = n < s->cap ? n : s->cap;
    double sum = 0.0;
    for (int64_t i = 0; i < k; i++) sum += s->kl[i];
    qsort(s->kl, (size_t)k, sizeof(double), cmp_double);
    o->nll_base = n ? s->nll_base / (double)n : NAN;
    o->ppl_base = exp(o->nll_base);
    o->kl_mean = k ? sum / (double)k : NAN;
    o->kl_median = fs_quantile_sorted(s->kl, k, 0.5);
    o->kl_p99 = fs_quantile_sorted(s->kl, k, 0.99);
    o->kl_max = k ? s->kl[k - 1] : NAN;
    o->same_top = n ? (double)s->same / (double)n : NAN;
    o->rms_dp = n ? sqrt(s->dp2 / (double)n) : NAN;
    o->rms_dp_top = n ? sqrt(s->dp2_top / (double)n) : NAN;
}
