/* plan.c: the memory / I/O / time model of plan.h.
 *
 * Invariants:
 *  1. Byte counts use saturating arithmetic (sat_mul, sat_add): a count that
 *     would overflow becomes UINT64_MAX, which no budget holds; a plan whose
 *     totals saturate is refused as FS_ERR_USAGE rather than printed wrong.
 *  2. Nothing here reads tensor data: a checkpoint only contributes the byte
 *     extents of its headers.
 *  3. A plan is all or nothing: on error the caller's fs_plan is left zeroed.
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "src/pipeline/plan.h"
#include "src/quant/quant.h"
#include "src/quant/solve-be.h"

#define SAT UINT64_MAX

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? SAT : r;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_add_overflow(a, b, &r) ? SAT : r;
}

static uint64_t u64max(uint64_t a, uint64_t b) { return a > b ? a : b; }
static uint64_t u64min(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t ceil_div(uint64_t a, uint64_t b) { return b ? a / b + (a % b != 0) : 0; }

void fs_plan_opts_default(fs_plan_opts *o)
{
    memset(o, 0, sizeof *o);
    o->samples = 128;
    o->seq_len = 2048;
    o->act_bytes = 2;
    o->disk_gbps = 7.0;
    o->pcie_gbps = 25.0;
    o->bits = 4;
    o->group_size = 128;
    o->batch_tokens = FS_BATCH_TOKENS_DEFAULT;
    o->wbytes = 2;
}

fs_status fs_plan_opts_from_config(fs_ctx *ctx, fs_plan_opts *o, const void *config, const char *where)
{
    json_t *j = (json_t *)config;
    json_t *dt = json_object_get(j, "torch_dtype");
    if (!json_is_string(dt)) dt = json_object_get(j, "dtype");
    o->wbytes = 2;
    if (json_is_string(dt)) {
        const char *s = json_string_value(dt);
        if (!strcmp(s, "float32") || !strcmp(s, "float")) o->wbytes = 4;
        else if (!strcmp(s, "bfloat16") || !strcmp(s, "float16") || !strcmp(s, "half")) o->wbytes = 2;
        else return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: torch_dtype \"%.40s\" is not float32, bfloat16 or float16",
                               where, s);
    }
    o->fp8_block[0] = o->fp8_block[1] = 0;
    json_t *q = json_object_get(j, "quantization_config");
    json_t *qm = json_object_get(q, "quant_method");
    if (json_is_string(qm) && !strcmp(json_string_value(qm), "fp8")) {
        json_t *b = json_object_get(q, "weight_block_size");
        o->fp8_block[0] = o->fp8_block[1] = 128;
        if (b && !json_is_null(b)) {
            if (!json_is_array(b) || json_array_size(b) != 2 || !json_is_integer(json_array_get(b, 0)) ||
                !json_is_integer(json_array_get(b, 1)) || json_integer_value(json_array_get(b, 0)) < 1 ||
                json_integer_value(json_array_get(b, 1)) < 1 || json_integer_value(json_array_get(b, 0)) > (1 << 20) ||
                json_integer_value(json_array_get(b, 1)) > (1 << 20))
                return fs_ctx_err(ctx, FS_ERR_FORMAT, "%s: quantization_config.weight_block_size must be "
                                  "two positive integers", where);
            o->fp8_block[0] = (int)json_integer_value(json_array_get(b, 0));
            o->fp8_block[1] = (int)json_integer_value(json_array_get(b, 1));
        }
    }
    return FS_OK;
}

/* ---- bytes on disk ----------------------------------------------------------- */

static uint64_t nelem(const fs_mtensor *t)
{
    return sat_mul((uint64_t)t->shape[0], t->ndim == 2 ? (uint64_t)t->shape[1] : 1);
}

static int ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !strcmp(s + n - k, suf);
}

/* Estimated bytes of a non-linear tensor (e_score_correction_bias is F32). */
static uint64_t est_other(const fs_plan_opts *o, const fs_mtensor *t)
{
    return sat_mul(nelem(t), ends_with(t->name, "e_score_correction_bias") ? 4 : (uint64_t)o->wbytes);
}

/* Estimated bytes of a decoder linear's weight (+ FP8 block scales, F32). */
static uint64_t est_linear(const fs_plan_opts *o, const fs_mlinear *x)
{
    uint64_t n = sat_mul((uint64_t)x->out, (uint64_t)x->in);
    if (!o->fp8_block[0]) return sat_mul(n, (uint64_t)o->wbytes);
    uint64_t sc = sat_mul(ceil_div((uint64_t)x->out, (uint64_t)o->fp8_block[0]),
                          ceil_div((uint64_t)x->in, (uint64_t)o->fp8_block[1]));
    return sat_add(n, sat_mul(sc, 4));
}

static uint64_t est_layer(const fs_plan_opts *o, const fs_mlayer *L)
{
    uint64_t b = 0;
    for (int i = 0; i < L->nlin; i++) b = sat_add(b, est_linear(o, &L->lin[i]));
    for (int i = 0; i < L->nother; i++) b = sat_add(b, est_other(o, &L->other[i]));
    return b;
}

/* An MTP layer as DeepSeek stores it: a decoder layer like the last one,
 * enorm, hnorm, eh_proj [H, 2H], its own embed_tokens and shared_head
 * (norm + head), all but the decoder linears in the storage dtype. */
static uint64_t est_mtp(const fs_plan_opts *o, const fs_model *m)
{
    uint64_t H = (uint64_t)m->hidden, V = (uint64_t)m->vocab, wb = (uint64_t)o->wbytes;
    uint64_t b = m->nlayers > 0 ? est_layer(o, &m->layers[m->nlayers - 1]) : 0;
    b = sat_add(b, sat_mul(3 * H, wb));                       /* enorm, hnorm, shared_head.norm */
    b = sat_add(b, sat_mul(sat_mul(H, 2 * H), wb));           /* eh_proj */
    return sat_add(b, sat_mul(sat_mul(2 * V, H), wb));        /* embed_tokens, shared_head.head */
}

static uint64_t est_global(const fs_plan_opts *o, const fs_model *m)
{
    uint64_t b = 0;
    for (int i = 0; i < m->nglobal; i++)
        if (!m->global[i].optional) b = sat_add(b, est_other(o, &m->global[i]));
    return b;
}

/* Exact bytes per layer and outside the layers from the checkpoint headers. */
static void ckpt_bytes(const fs_ckpt *c, fs_plan *p)
{
    static const char pre[] = "model.layers.";
    for (size_t k = 0; k < c->ntensors; k++) {
        const fs_st_tensor *t = c->entries[k].t;
        long l = -1;
        if (!strncmp(t->name, pre, sizeof pre - 1)) {
            char *end = NULL;
            l = strtol(t->name + sizeof pre - 1, &end, 10);
            if (end == t->name + sizeof pre - 1 || *end != '.') l = -1;
        }
        if (l >= 0 && l < p->nlayers) p->layers[l].read_bytes = sat_add(p->layers[l].read_bytes, t->nbytes);
        else p->global_bytes = sat_add(p->global_bytes, t->nbytes);
    }
}

/* ---- one decoder layer ------------------------------------------------------- */

typedef struct lstat {
    uint64_t w32, w32_dense, hess, hess_dense, solver_dense, solver_e;
    uint64_t solver_dense_be, solver_e_be;   /* the backend solver's (solve-be.h) of the largest */
    uint64_t w32_arena;                /* w32 as the device arena holds it (64-byte aligned tensors) */
    uint64_t out_dense, in_dense;      /* sum of dense outputs, widest dense input */
    uint64_t out_e, e_w32, e_hess;     /* per expert: sum of outputs, f32 weights, Hessian */
    uint64_t qbytes, copy_bytes;       /* quantized output, copied tensors */
    int ndense_groups;
    double hess_fl, chol_fl, gptq_fl, fwd_fl;
} lstat;

static uint64_t solver_of(const fs_plan_opts *o, const fs_mlinear *x)
{
    uint64_t in = (uint64_t)x->in, out = (uint64_t)x->out, on = sat_mul(out, in);
    uint64_t qm = sat_mul(sat_mul(out, (uint64_t)fs_ngroups(x->in, o->group_size)), 4);
    return sat_add(sat_add(sat_mul(sat_mul(in, in), 4), sat_mul(on, 9)), qm);
}

static fs_status layer_stats(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c, const fs_plan_opts *o,
                             const fs_mlayer *L, lstat *s)
{
    memset(s, 0, sizeof *s);
    const double T = (double)o->samples * (double)o->seq_len;
    const double Te = m->experts > 0 ? fmin(T, ceil(T * m->top_k / m->experts)) : T;
    int64_t *gin = calloc((size_t)(L->ngroups ? L->ngroups : 1), sizeof *gin);
    uint64_t *ew = calloc((size_t)(m->experts > 0 ? m->experts : 1), sizeof *ew);
    uint64_t *eo = calloc((size_t)(m->experts > 0 ? m->experts : 1), sizeof *eo);
    if (!gin || !ew || !eo) {
        free(gin); free(ew); free(eo);
        return fs_ctx_err(ctx, FS_ERR_NOMEM, "plan of model.layers.%d", L->index);
    }
    double att_w = 0;
    for (int i = 0; i < L->nlin; i++) {
        const fs_mlinear *x = &L->lin[i];
        const int ex = x->expert >= 0 && x->expert < m->experts;
        const double t = ex ? Te : T, out = (double)x->out, in = (double)x->in;
        uint64_t w = sat_mul(sat_mul((uint64_t)x->out, (uint64_t)x->in), 4);
        uint64_t h = sat_mul(sat_mul((uint64_t)x->in, (uint64_t)x->in), 4);
        s->w32 = sat_add(s->w32, w);
        s->w32_arena = sat_add(s->w32_arena, ceil_div(w, 64) * 64);
        s->hess = u64max(s->hess, h);
        if (ex) {
            ew[x->expert] = sat_add(ew[x->expert], w);
            eo[x->expert] = sat_add(eo[x->expert], (uint64_t)x->out);
            s->e_hess = u64max(s->e_hess, h);
            s->solver_e = u64max(s->solver_e, solver_of(o, x));
            s->solver_e_be = u64max(s->solver_e_be, fs_solve_be_bytes(x->out, x->in, o->group_size));
        } else {
            s->w32_dense = sat_add(s->w32_dense, w);
            s->hess_dense = u64max(s->hess_dense, h);
            s->solver_dense = u64max(s->solver_dense, solver_of(o, x));
            s->solver_dense_be = u64max(s->solver_dense_be, fs_solve_be_bytes(x->out, x->in, o->group_size));
            s->out_dense = sat_add(s->out_dense, (uint64_t)x->out);
            s->in_dense = u64max(s->in_dense, (uint64_t)x->in);
        }
        if (x->group >= 0 && x->group < L->ngroups && !gin[x->group]) {      /* first of its group */
            gin[x->group] = x->in;
            s->hess_fl += t * in * in;
            s->chol_fl += in * in * in;
            s->ndense_groups += !ex;
        }
        s->gptq_fl += out * in * in;
        s->fwd_fl += 2.0 * (2.0 * t * out * in);
        if (ends_with(x->name, "self_attn.o_proj")) att_w = in;
        uint64_t qb = ceil_div(sat_mul(sat_mul((uint64_t)x->out, (uint64_t)x->in), (uint64_t)o->bits), 8);
        uint64_t qm = sat_mul(sat_mul((uint64_t)x->out, (uint64_t)fs_ngroups(x->in, o->group_size)), 4);
        s->qbytes = sat_add(s->qbytes, sat_add(qb, qm));
    }
    s->fwd_fl += 2.0 * (2.0 * (double)o->samples * (double)o->seq_len * (double)o->seq_len * att_w);
    for (int e = 0; e < m->experts; e++) {
        s->e_w32 = u64max(s->e_w32, ew[e]);
        s->out_e = u64max(s->out_e, eo[e]);
    }
    for (int i = 0; i < L->nother; i++) {
        const fs_ckpt_entry *e = c ? fs_ckpt_find(c, L->other[i].name) : NULL;
        uint64_t b = c ? (e ? e->t->nbytes : 0) : est_other(o, &L->other[i]);
        s->copy_bytes = sat_add(s->copy_bytes, b);
        uint64_t w = sat_mul(nelem(&L->other[i]), 4);
        s->w32 = sat_add(s->w32, w);
        s->w32_arena = sat_add(s->w32_arena, ceil_div(w, 64) * 64);
        s->w32_dense = sat_add(s->w32_dense, w);
    }
    free(gin);
    free(ew);
    free(eo);
    return FS_OK;
}

/* Memory and time of decoder row l, given its stats and the next row's read
 * (and other_w32: the f32 weights of the other decoder layer held at once).
 * Routed experts come first (each wave is two more passes over the tokens):
 * as many per wave as fit beside a one-window batch; the batch then grows
 * to batch_tokens in whole windows if what is left allows.
 *
 * The GPU figure is what the pipeline holds there (plan.h 6): two layers'
 * f32 weights, experts included (fs_lwb_upload takes a whole layer, into one
 * of two arenas that are kept: the next layer comes up into the other during
 * this one's final pass), one batch, and either a dense group's Hessian and
 * the backend solver's buffers or, in the waves, the layer's full-input
 * Hessian beside the wave's expert Hessians (one per expert: down's come
 * after gate/up's are freed) and the solver. */
static void layer_plan(const fs_model *m, const fs_plan_opts *o, int gpu, uint64_t host, uint64_t gpumem,
                       const lstat *s, uint64_t next_read, uint64_t other_w32, fs_plan_layer *r)
{
    const uint64_t T = sat_mul((uint64_t)o->samples, (uint64_t)o->seq_len), H = (uint64_t)m->hidden;
    const uint64_t ab = (uint64_t)o->act_bytes, L = (uint64_t)o->seq_len;
    const uint64_t Bmax = u64min((uint64_t)o->batch_tokens, T), Bmin = u64min(L, Bmax);
    const uint64_t TH = sat_mul(T, H);
    const int moe = r->moe && m->experts > 0;
    const uint64_t E = moe ? (uint64_t)m->experts : 0;
    /* f32 activations of one token in a batch: xn, residual, the outputs, the widest input
     * (GPU: the forward's own buffers, fs_fwd_ws_bytes, when the caller gave them) */
    const uint64_t per_tok = gpu && o->fwd_tok_bytes ? o->fwd_tok_bytes
                                                     : sat_mul(4, sat_add(sat_add(2 * H, u64max(s->out_dense, s->out_e)), s->in_dense));

    r->w32_bytes = s->w32;
    r->hess_bytes = s->hess;
    r->solver_bytes = u64max(s->solver_dense, s->solver_e);
    r->act_bytes = sat_mul(sat_mul(TH, ab), o->act_sets > 1 ? (uint64_t)o->act_sets : 1);
    /* per expert of a wave: f32 weights (GPU: uploaded per wave; the CPU path
     * decodes the whole layer at once, see wres), one Hessian at a time
     * (gate/up's, then down's), and its codes (1 byte a weight) held until the
     * wave is written */
    r->expert_bytes = moe ? (gpu ? s->e_hess : sat_add(s->e_hess, s->e_w32 / 4)) : 0;
    /* f32 weights resident in the compute memory for the whole layer */
    const uint64_t wres = gpu ? sat_add(sat_add(s->w32_arena, other_w32), o->fwd_fixed_bytes) : s->w32;
    /* the backend solver's buffers (the host solver's for --grid hmse / --refine-scales: the
     * larger of the two), and a MoE layer's full-input Hessian, held on the backend beside
     * its shared experts' solves and its waves */
    const uint64_t hx = moe ? sat_mul(sat_mul(H, H), 4) : 0;
    const uint64_t solver_dense = u64max(s->solver_dense_be, s->solver_dense);
    const uint64_t solver_e = sat_add(u64max(s->solver_e_be, s->solver_e), hx);
    r->experts = (int)E;

    uint64_t ring = sat_add(r->read_bytes, next_read);
    /* resident: the boundary (+ MoE routing: an expert index and weight per
     * token and slot); spilled: two windows read ahead and two written behind
     * (stream/spill.h; the routing stays in memory) */
    uint64_t act_res = r->act_bytes, act_sp = u64min(sat_mul(sat_mul(Bmin, H), 4 * ab), r->act_bytes);
    if (moe) {
        const uint64_t routing = sat_mul(T, (uint64_t)m->top_k * 8);
        act_res = sat_add(act_res, routing);
        act_sp = sat_add(act_sp, routing);
    }
    uint64_t dense_phase = sat_add(sat_add(s->hess_dense, solver_dense), hx);
    uint64_t one_wave = moe ? sat_add(r->expert_bytes, solver_e) : 0;
    uint64_t comp_min = sat_add(sat_add(wres, u64max(dense_phase, one_wave)), sat_mul(Bmin, per_tok));
    uint64_t act, side;                          /* side: host bytes beside the compute memory */
    if (gpu) {
        r->host_min = sat_add(ring, act_sp);
        r->spilled = sat_add(ring, act_res) > host;
        act = r->spilled ? act_sp : act_res;
        r->host_peak = sat_add(ring, act);
        r->gpu_min = comp_min;
        side = 0;
    } else {
        r->host_min = sat_add(sat_add(ring, act_sp), comp_min);
        r->spilled = sat_add(sat_add(ring, act_res), comp_min) > host;
        act = r->spilled ? act_sp : act_res;
        side = sat_add(ring, act);
    }
    uint64_t budget = gpu ? gpumem : host;
    int64_t k = 0;
    if (moe) {                                   /* experts per wave beside a one-window batch */
        uint64_t used = sat_add(sat_add(sat_add(wres, sat_mul(Bmin, per_tok)), solver_e), side);
        uint64_t left = budget > used ? budget - used : 0;
        uint64_t fit = r->expert_bytes ? left / r->expert_bytes : E;
        k = (int64_t)u64max(1, u64min(fit, E));
        r->experts_per_wave = (int)k;
        r->waves = (int)ceil_div(E, (uint64_t)k);
    }
    uint64_t wave = moe ? sat_add(sat_mul((uint64_t)k, r->expert_bytes), solver_e) : 0;
    uint64_t solve = sat_add(sat_add(wres, u64max(dense_phase, wave)), side);
    uint64_t room = budget > solve ? budget - solve : 0;     /* then the batch grows */
    uint64_t B = per_tok ? u64min(Bmax, room / per_tok) : Bmax;
    if (B >= L) B -= B % L;                      /* whole windows */
    B = u64max(B, Bmin);
    r->scratch_bytes = sat_mul(B, per_tok);
    r->batch_tokens = (int64_t)B;
    uint64_t comp_peak = sat_add(sat_add(wres, r->scratch_bytes), u64max(dense_phase, wave));
    if (gpu) r->gpu_peak = comp_peak;
    else r->host_peak = sat_add(side, comp_peak);

    /* traffic and time */
    /* passes over the tokens: one per dense input group, the layer's end, and
     * for MoE the routing and two per wave */
    uint64_t passes = (uint64_t)s->ndense_groups + 1 + (moe ? 1 + 2 * (uint64_t)r->waves : 0);
    uint64_t spill_rd = 0, spill_wr = 0;
    if (r->spilled) {                            /* every pass reads the boundary; the mid-layer */
        spill_rd = sat_mul(passes + 1, r->act_bytes);     /* move and the end write it; the */
        spill_wr = sat_mul(2, r->act_bytes);              /* boundary file is made from it */
    }
    r->write_bytes = sat_add(sat_add(s->qbytes, s->copy_bytes), r->act_bytes);
    r->hess_flops = s->hess_fl;
    r->chol_flops = s->chol_fl;
    r->gptq_flops = s->gptq_fl;
    r->fwd_flops = s->fwd_fl;
    r->io_s = ((double)r->read_bytes + (double)r->write_bytes + (double)spill_rd + (double)spill_wr) /
              (o->disk_gbps * 1e9);
    r->compute_s = (s->hess_fl + s->chol_fl + s->gptq_fl + s->fwd_fl) / (o->tflops * 1e12);
    if (gpu) {
        double xfer = (double)r->read_bytes + (double)(passes + 1) * (double)r->act_bytes;
        r->compute_s += xfer / (o->pcie_gbps * 1e9);
    }
    r->est_s = fmax(r->io_s, r->compute_s);
}

static uint64_t phys_mem(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGE_SIZE);
    if (pages <= 0 || psz <= 0) return 0;
    return sat_mul((uint64_t)pages, (uint64_t)psz);
}

void fs_plan_free(fs_plan *p)
{
    if (!p) return;
    free(p->layers);
    memset(p, 0, sizeof *p);
}

const char *fs_plan_fmt_bytes(char *buf, size_t n, uint64_t b)
{
    static const char *unit[] = {"B", "KB", "MB", "GB", "TB", "PB", "EB"};
    double v = (double)b;
    int u = 0;
    while (v >= 999.5 && u < 6) v /= 1000.0, u++;
    if (u == 0) snprintf(buf, n, "%llu B", (unsigned long long)b);
    else snprintf(buf, n, "%.*f %s", v < 9.995 ? 2 : v < 99.95 ? 1 : 0, v, unit[u]);
    return buf;
}

static fs_status check_opts(fs_ctx *ctx, const fs_model *m, const fs_plan_opts *o)
{
    if (o->samples < 1 || o->seq_len < 1)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--samples %lld and --seq-len %lld must be >= 1",
                          (long long)o->samples, (long long)o->seq_len);
    if (o->act_bytes != 2 && o->act_bytes != 4)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "activation bytes %d: must be 2 (bf16) or 4 (f32)", o->act_bytes);
    if (!(o->disk_gbps > 0) || !(o->pcie_gbps > 0) || o->tflops < 0 || !isfinite(o->tflops))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--disk-gbps %g, --pcie-gbps %g and --tflops %g must be positive",
                          o->disk_gbps, o->pcie_gbps, o->tflops);
    if (o->bits < 1 || o->bits > 16 || o->batch_tokens < 1 || o->wbytes < 1)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "bits %d, batch tokens %lld, storage bytes %d out of range", o->bits,
                          (long long)o->batch_tokens, o->wbytes);
    if (o->group_size != -1 && (o->group_size < 32 || o->group_size % 32))
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--group-size %lld: a multiple of 32, or -1", (long long)o->group_size);
    if (m->nlayers + m->nmtp < 1) return fs_ctx_err(ctx, FS_ERR_USAGE, "the model has no layers");
    return FS_OK;
}

fs_status fs_plan_compute(fs_ctx *ctx, const fs_model *m, const fs_ckpt *c, const fs_plan_opts *o, fs_plan *p)
{
    memset(p, 0, sizeof *p);
    fs_status rc = check_opts(ctx, m, o);
    if (rc != FS_OK) return rc;
    fs_plan q = {0};
    q.opts = *o;
    q.gpu = o->gpu_mem > 0;
    if (!q.opts.host_mem) {
        q.host_detected = 1;
        q.opts.host_mem = (uint64_t)((double)phys_mem() * (1.0 - FS_PLAN_HOST_MARGIN));
    }
    if (!(q.opts.tflops > 0)) q.opts.tflops = q.gpu ? FS_PLAN_GPU_TFLOPS : FS_PLAN_CPU_TFLOPS;
    snprintf(q.model_type, sizeof q.model_type, "%s", m->model_type);
    q.exact = c != NULL;
    q.tokens = o->samples * o->seq_len;
    q.nlayers = m->nlayers + m->nmtp;
    q.layers = calloc((size_t)q.nlayers, sizeof *q.layers);
    if (!q.layers) return fs_ctx_err(ctx, FS_ERR_NOMEM, "plan of %d layers", q.nlayers);
    for (int l = 0; l < q.nlayers; l++) {
        q.layers[l].index = l;
        q.layers[l].mtp = m->layers[l].mtp;
        q.layers[l].moe = m->layers[l].moe;
    }
    if (c) {
        ckpt_bytes(c, &q);
    } else {
        for (int l = 0; l < q.nlayers; l++)
            q.layers[l].read_bytes = q.layers[l].mtp ? est_mtp(o, m) : est_layer(o, &m->layers[l]);
        q.global_bytes = est_global(o, m);
    }
    lstat *st = calloc((size_t)q.nlayers, sizeof *st);
    if (!st) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "plan of %d layers", q.nlayers);
    for (int l = 0; rc == FS_OK && l < q.nlayers; l++)
        if (!q.layers[l].mtp) rc = layer_stats(ctx, m, c, &q.opts, &m->layers[l], &st[l]);
    for (int l = 0; rc == FS_OK && l < q.nlayers; l++) {
        fs_plan_layer *r = &q.layers[l];
        uint64_t next = l + 1 < q.nlayers ? q.layers[l + 1].read_bytes : 0;
        uint64_t other_w32 = 0;                  /* the other arena: at most the largest other decoder layer */
        for (int k = 0; k < q.nlayers; k++)
            if (k != l && !q.layers[k].mtp) other_w32 = u64max(other_w32, st[k].w32_arena);
        if (r->mtp) {                            /* copied through */
            r->write_bytes = r->read_bytes;
            r->host_peak = r->host_min = sat_add(r->read_bytes, next);
            r->io_s = 2.0 * (double)r->read_bytes / (q.opts.disk_gbps * 1e9);
            r->est_s = r->io_s;
            continue;
        }
        layer_plan(m, &q.opts, q.gpu, q.opts.host_mem, q.opts.gpu_mem, &st[l], next, other_w32, r);
    }
    free(st);
    if (rc != FS_OK) { fs_plan_free(&q); return rc; }
    q.read_bytes = q.write_bytes = q.global_bytes;
    q.host_min_layer = q.gpu_min_layer = -1;
    double rate = q.opts.disk_gbps * 1e9;
    q.first_read_s = (double)q.layers[0].read_bytes / rate;
    q.total_s = 2.0 * (double)q.global_bytes / rate + q.first_read_s;
    for (int l = 0; l < q.nlayers; l++) {
        const fs_plan_layer *r = &q.layers[l];
        q.read_bytes = sat_add(q.read_bytes, r->read_bytes);
        q.write_bytes = sat_add(q.write_bytes, r->write_bytes);
        q.host_peak = u64max(q.host_peak, r->host_peak);
        q.gpu_peak = u64max(q.gpu_peak, r->gpu_peak);
        if (q.host_min_layer < 0 || r->host_min > q.host_min) q.host_min = r->host_min, q.host_min_layer = l;
        if (q.gpu && (q.gpu_min_layer < 0 || r->gpu_min > q.gpu_min)) q.gpu_min = r->gpu_min, q.gpu_min_layer = l;
        if (r->waves > q.max_waves) q.max_waves = r->waves;
        q.total_s += r->est_s;
    }
    char a[32], b[32];
    if (q.read_bytes == SAT || q.write_bytes == SAT || q.host_min == SAT || q.gpu_min == SAT)
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "the plan's sizes overflow 64 bits (--samples %lld x --seq-len %lld "
                        "on %s)", (long long)o->samples, (long long)o->seq_len, m->model_type);
    else if (q.host_min > q.opts.host_mem) {
        if (q.host_detected)
            rc = fs_ctx_err(ctx, FS_ERR_USAGE, "the largest layer (model.layers.%d) needs %s (%llu bytes) of host "
                            "memory (%s detected: physical memory less %d%%; set --host-mem)", q.host_min_layer,
                            fs_plan_fmt_bytes(a, sizeof a, q.host_min), (unsigned long long)q.host_min,
                            fs_plan_fmt_bytes(b, sizeof b, q.opts.host_mem), (int)(FS_PLAN_HOST_MARGIN * 100 + 0.5));
        else
            rc = fs_ctx_err(ctx, FS_ERR_USAGE, "the largest layer (model.layers.%d) needs %s (%llu bytes) of host "
                            "memory (--host-mem %s given)", q.host_min_layer,
                            fs_plan_fmt_bytes(a, sizeof a, q.host_min), (unsigned long long)q.host_min,
                            fs_plan_fmt_bytes(b, sizeof b, q.opts.host_mem));
    } else if (q.gpu && q.gpu_min > q.opts.gpu_mem)
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "the largest layer (model.layers.%d) needs %s (%llu bytes) of GPU "
                        "memory (--gpu-mem %s given)", q.gpu_min_layer, fs_plan_fmt_bytes(a, sizeof a, q.gpu_min),
                        (unsigned long long)q.gpu_min, fs_plan_fmt_bytes(b, sizeof b, q.opts.gpu_mem));
    if (rc != FS_OK) { fs_plan_free(&q); return rc; }
    *p = q;
    return FS_OK;
}

/* ---- output ------------------------------------------------------------------ */

static const char *fmt_time(char *buf, size_t n, double s)
{
    if (s < 0.01) snprintf(buf, n, "%.1fms", s * 1e3);
    else if (s < 60) snprintf(buf, n, "%.2fs", s);
    else if (s < 3600) snprintf(buf, n, "%dm%02ds", (int)(s / 60), (int)fmod(s, 60));
    else snprintf(buf, n, "%dh%02dm", (int)(s / 3600), (int)fmod(s / 60, 60));
    return buf;
}

int fs_plan_disk(const fs_plan *p, int spill, uint64_t *out, uint64_t *work)
{
    uint64_t o = p->global_bytes, act = 0;
    for (int l = 0; l < p->nlayers; l++) {
        const fs_plan_layer *r = &p->layers[l];
        o += r->write_bytes > r->act_bytes ? r->write_bytes - r->act_bytes : 0;
        act = r->act_bytes > act ? r->act_bytes : act;
        spill |= r->spilled;
    }
    *out = o;
    *work = (spill ? 5 : 3) * act;               /* + the two raw spill files */
    return spill;
}

void fs_plan_print(const fs_plan *p, FILE *f)
{
    char b[12][32];
    const fs_plan_opts *o = &p->opts;
    fprintf(f, "plan: %s, %d decoder layer%s%s; bytes on disk %s\n", p->model_type,
            p->nlayers - (p->nlayers && p->layers[p->nlayers - 1].mtp ? 1 : 0), p->nlayers == 1 ? "" : "s",
            p->nlayers && p->layers[p->nlayers - 1].mtp ? " + MTP" : "",
            p->exact ? "from the checkpoint" : "estimated from config.json");
    fprintf(f, "calibration: %lld x %lld = %lld tokens, activations %s; backend %s; host budget %s%s",
            (long long)o->samples, (long long)o->seq_len, (long long)p->tokens, o->act_bytes == 2 ? "bf16" : "f32",
            p->gpu ? "gpu" : "cpu", fs_plan_fmt_bytes(b[0], 32, o->host_mem), p->host_detected ? " (detected)" : "");
    if (p->gpu) fprintf(f, ", GPU budget %s", fs_plan_fmt_bytes(b[1], 32, o->gpu_mem));
    if (o->act_sets > 1) fprintf(f, "; %d boundaries (eval --base)", o->act_sets);
    fprintf(f, "\n\n%-18s %-11s %9s %9s %9s %9s %9s %9s %9s %8s %8s %8s\n", "layer", "kind", "read", "written",
            "hessian", "act", "host", "gpu", "waves", "compute", "io", "est");
    for (int l = 0; l < p->nlayers; l++) {
        const fs_plan_layer *r = &p->layers[l];
        char name[32], kind[16], waves[24];
        snprintf(name, sizeof name, "model.layers.%d", r->index);
        snprintf(kind, sizeof kind, "%s%s", r->mtp ? "mtp" : r->moe ? "moe" : "dense", r->spilled ? "+spill" : "");
        if (r->waves) snprintf(waves, sizeof waves, "%dx%d", r->waves, r->experts_per_wave);
        else snprintf(waves, sizeof waves, "-");
        fprintf(f, "%-18s %-11s %9s %9s %9s %9s %9s %9s %9s %8s %8s %8s\n", name, kind,
                fs_plan_fmt_bytes(b[0], 32, r->read_bytes), fs_plan_fmt_bytes(b[1], 32, r->write_bytes),
                r->mtp ? "-" : fs_plan_fmt_bytes(b[2], 32, r->hess_bytes),
                r->mtp ? "-" : fs_plan_fmt_bytes(b[3], 32, r->act_bytes), fs_plan_fmt_bytes(b[4], 32, r->host_peak),
                p->gpu && !r->mtp ? fs_plan_fmt_bytes(b[5], 32, r->gpu_peak) : "-", waves,
                fmt_time(b[6], 32, r->compute_s), fmt_time(b[7], 32, r->io_s), fmt_time(b[8], 32, r->est_s));
    }
    fprintf(f, "\ntotal: read %s (%s outside the layers), written %s, estimated %s (first read %s not overlapped)\n",
            fs_plan_fmt_bytes(b[0], 32, p->read_bytes), fs_plan_fmt_bytes(b[1], 32, p->global_bytes),
            fs_plan_fmt_bytes(b[2], 32, p->write_bytes), fmt_time(b[3], 32, p->total_s),
            fmt_time(b[4], 32, p->first_read_s));
    fprintf(f, "peak: host %s of %s", fs_plan_fmt_bytes(b[0], 32, p->host_peak), fs_plan_fmt_bytes(b[1], 32, o->host_mem));
    if (p->gpu) fprintf(f, ", GPU %s of %s", fs_plan_fmt_bytes(b[2], 32, p->gpu_peak), fs_plan_fmt_bytes(b[3], 32, o->gpu_mem));
    fprintf(f, "; minimum host %s (model.layers.%d)", fs_plan_fmt_bytes(b[4], 32, p->host_min), p->host_min_layer);
    if (p->gpu) fprintf(f, ", minimum GPU %s (model.layers.%d)", fs_plan_fmt_bytes(b[5], 32, p->gpu_min), p->gpu_min_layer);
    uint64_t dout, dwork;
    const int spill = fs_plan_disk(p, 0, &dout, &dwork);
    fprintf(f, "\ndisk: output %s, work folder %s (three activation boundaries, for resume%s)",
            fs_plan_fmt_bytes(b[6], 32, dout), fs_plan_fmt_bytes(b[7], 32, dwork),
            spill ? "; two more for the spilled activations" : "");
    fprintf(f, "\nassumptions: disk %.1f GB/s (reads and writes), %g TFLOP/s effective%s", o->disk_gbps, o->tflops,
            p->gpu ? "" : " (CPU)");
    if (p->gpu) fprintf(f, ", PCIe %.1f GB/s", o->pcie_gbps);
    fprintf(f, ", output %d-bit g%lld, batches of %lld tokens%s\n", o->bits, (long long)o->group_size,
            (long long)o->batch_tokens, p->exact ? "" : o->fp8_block[0] ? ", FP8 decoder linears with F32 block scales"
                                                    : o->wbytes == 4 ? ", float32 storage" : ", 16-bit storage");
    fprintf(f, "  time per layer = max(io, compute): the next layer is read while this one computes; "
               "io = (read + written) / disk; expert waves = ceil(experts / experts per wave)\n");
}

fs_status fs_plan_json(fs_ctx *ctx, const fs_plan *p, char **out)
{
    *out = NULL;
    const fs_plan_opts *o = &p->opts;
    json_t *ls = json_array(), *j = NULL;
    uint64_t dout, dwork;
    fs_plan_disk(p, 0, &dout, &dwork);
    for (int l = 0; ls && l < p->nlayers; l++) {
        const fs_plan_layer *r = &p->layers[l];
        json_t *x = json_pack(
            "{s:i, s:s, s:b, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:i,"
            " s:f, s:f, s:f, s:f, s:f, s:f, s:f}",
            "layer", r->index, "kind", r->mtp ? "mtp" : r->moe ? "moe" : "dense", "spilled", r->spilled,
            "read_bytes", (json_int_t)r->read_bytes, "write_bytes", (json_int_t)r->write_bytes,
            "w32_bytes", (json_int_t)r->w32_bytes, "hessian_bytes", (json_int_t)r->hess_bytes,
            "solver_bytes", (json_int_t)r->solver_bytes, "act_bytes", (json_int_t)r->act_bytes,
            "scratch_bytes", (json_int_t)r->scratch_bytes, "batch_tokens", (json_int_t)r->batch_tokens,
            "expert_bytes", (json_int_t)r->expert_bytes,
            "host_peak", (json_int_t)r->host_peak, "gpu_peak", (json_int_t)r->gpu_peak,
            "host_min", (json_int_t)r->host_min, "gpu_min", (json_int_t)r->gpu_min, "experts", r->experts,
            "experts_per_wave", r->experts_per_wave, "waves", r->waves, "hessian_flops", r->hess_flops,
            "chol_flops", r->chol_flops, "gptq_flops", r->gptq_flops, "forward_flops", r->fwd_flops,
            "io_s", r->io_s, "compute_s", r->compute_s, "est_s", r->est_s);
        if (!x || json_array_append_new(ls, x)) { json_decref(ls); ls = NULL; }
    }
    if (ls)
        j = json_pack("{s:s, s:b, s:s, s:I, s:I, s:I, s:i, s:I, s:I, s:b, s:f, s:f, s:f, s:i, s:I, s:o,"
                      " s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:i, s:i, s:i, s:f, s:f, s:I, s:I}}",
                      "model_type", p->model_type, "exact_bytes", p->exact, "backend", p->gpu ? "gpu" : "cpu",
                      "samples", (json_int_t)o->samples, "seq_len", (json_int_t)o->seq_len,
                      "tokens", (json_int_t)p->tokens, "act_bytes_per_value", o->act_bytes,
                      "host_mem", (json_int_t)o->host_mem, "gpu_mem", (json_int_t)o->gpu_mem,
                      "host_detected", p->host_detected, "disk_gbps", o->disk_gbps, "tflops", o->tflops,
                      "pcie_gbps", o->pcie_gbps, "bits", o->bits, "group_size", (json_int_t)o->group_size,
                      "layers", ls, "total", "read_bytes", (json_int_t)p->read_bytes,
                      "write_bytes", (json_int_t)p->write_bytes, "global_bytes", (json_int_t)p->global_bytes,
                      "host_peak", (json_int_t)p->host_peak, "gpu_peak", (json_int_t)p->gpu_peak,
                      "host_min", (json_int_t)p->host_min, "gpu_min", (json_int_t)p->gpu_min,
                      "host_min_layer", p->host_min_layer,
                      "gpu_min_layer", p->gpu_min_layer, "max_waves", p->max_waves,
                      "first_read_s", p->first_read_s, "est_s", p->total_s, "disk_out_bytes", (json_int_t)dout,
                      "disk_work_bytes", (json_int_t)dwork);
    if (j && json_object_set_new(j, "act_sets", json_integer(o->act_sets > 1 ? o->act_sets : 1)) != 0) {
        json_decref(j);
        j = NULL;
    }
    char *s = j ? json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s) return fs_ctx_err(ctx, FS_ERR_NOMEM, "plan JSON");
    *out = s;
    return FS_OK;
}
