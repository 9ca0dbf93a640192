/* pipeline.c: the quantize pipeline of pipeline.h.
 *
 * Per layer, five passes over the calibration batches (recomputing rather
 * than keeping intermediate activations, so memory stays one batch deep):
 *   A  xn = norm(x)                          -> H_qkv;  quantize q, k, v
 *   B  attention with quantized q, k, v      -> H_o;    quantize o
 *   C  x += o(att); xn2 = norm(x)            -> H_gu;   quantize gate, up
 *   D  a = silu(gate xn2) * up xn2           -> H_down; quantize down
 *   E  x += down(a)                          (x is the next layer's input)
 * Each quantized weight replaces the f32 one in memory as soon as it is
 * solved, so later passes see exactly what the checkpoint will hold.
 *
 * A MoE layer (moe_layer) runs A and B, then:
 *   C  x += o(att); xn2 = norm(x)            -> H_x (every token); qwen2_moe:
 *                                               quantize shared gate, up
 *   D  qwen2_moe: shared down from its silu(gate) * up (all tokens)
 *   R  routing of every token by the f32 router on xn2 -> counts per expert
 *   per expert e, over the rows R sent to e (all rows under all-tokens):
 *   Ge gathered xn2 rows                     -> H_e;    quantize gate, up
 *   De silu(gate xe) * up xe (quantized)     -> H_de;   quantize down
 *   E  x += MoE(xn2) with every quantized weight (the same routing)
 * Under-calibrated experts (< min_expert_tokens, or none) follow the policy
 * (moe.h) and are logged by name with it; nothing is silently skipped.
 *
 * A DeepSeek layer (f->mla, src/forward/block-mla.c) replaces A and B by four passes:
 *   A  xn = norm(x)                          -> H_a;    quantize q_a (or q), kv_a
 *   Aq cq = q_a_layernorm(xn q_a^T), quantized q_a -> H_qb; quantize q_b (q LoRA only)
 *   Ak c = kv_a_layernorm(xn kv_a^T [:kvr]), quantized kv_a -> H_kvb; quantize kv_b
 *   B  MLA attention with every quantized projection -> H_o; quantize o
 * then the dense MLP as C..E, or a MoE layer whose shared experts (one MLP
 * of width moe_intermediate_size * n_shared_experts over every token) take
 * qwen2_moe's shared-expert place, routed by DeepSeek's router (moe.h).
 * MTP layers (index >= num_hidden_layers) are copied unquantized (FP8
 * dequantized to BF16), and the log says so.
 *
 * The activations x live in memory, or in the work folder when the host
 * budget cannot hold them (po->spill, stream/spill.h: every pass above
 * streams them; the pass that moves x mid-layer writes the other file).
 * With po->experts_only the linears outside the routed experts are copied
 * as they are when the layer comes in and the capture-only passes are
 * skipped; the passes that move x still run.
 *
 * Every pass runs the one layer forward (src/forward/layer.h) on the
 * backend's queues: where it stops (a tap) and what moves is decided here.
 * A layer's weights go up on the upload queue (the compute queue waits for
 * its event; with po->lookahead the next layer's during this layer's final
 * pass); batches flow through two host staging slots ordered by events (see
 * pass()); Hessians sum on the backend and stay there: each linear is solved
 * on the backend's compute queue with its weight and Hessian resident
 * (src/quant/solve-be.h), or, for the options without ops (solve-be.h's
 * fs_solve_be_supports), both come down for the host solver.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/resource.h>
#include <unistd.h>

#include "src/backend/backend.h"
#include "src/forward/layer.h"
#include "src/models/moe.h"
#include "src/pipeline/pipeline.h"
#include "src/pipeline/plan.h"
#include "src/quant/solve-be.h"
#include "stream/boundary.h"
#include "stream/layerio.h"
#include "stream/spill.h"
#include "stream/writer.h"

#define WRITER_MIN_PENDING (512ull << 20)   /* bytes the writer may hold behind compute */

/* ---- writer jobs: everything that touches the output folder runs there ---- */

typedef struct job_linear {
    fs_trace *tr;
    int layer;
    int lin;                 /* index in the layer's description (the order of the output) */
    uint64_t bytes;          /* memory it holds until written */
    fs_outckpt *o;
    char *name;
    fs_layer_result r;
} job_linear;

static fs_status run_linear(fs_ctx *ctx, void *arg)
{
    job_linear *j = arg;
    double t0 = fs_now();
    fs_status rc = fs_out_add_linear(ctx, j->o, j->name, &j->r);
    fs_trace_span(j->tr, FS_STAGE_WRITE, j->layer, j->name, t0, fs_now(),
                  (uint64_t)(j->r.rows * j->r.cols), 0);
    return rc;
}

static void free_linear(void *arg)
{
    job_linear *j = arg;
    fs_layer_result_free(&j->r);
    free(j->name);
    free(j);
}

typedef struct job_tensor {
    fs_trace *tr;
    int layer;
    fs_outckpt *o;
    char *name;
    fs_dtype dt;
    int ndim;
    int64_t shape[FS_ST_MAX_DIMS];
    void *data;              /* handed to fs_out_add (which owns it from then on) */
} job_tensor;

static fs_status run_tensor(fs_ctx *ctx, void *arg)
{
    job_tensor *j = arg;
    void *d = j->data;
    j->data = NULL;
    uint64_t bytes = fs_dtype_size(j->dt);
    for (int k = 0; k < j->ndim; k++) bytes *= (uint64_t)j->shape[k];
    double t0 = fs_now();
    fs_status rc = fs_out_add(ctx, j->o, j->name, j->dt, j->ndim, j->shape, d);
    fs_trace_span(j->tr, FS_STAGE_WRITE, j->layer, j->name, t0, fs_now(), bytes, 0);
    return rc;
}

static void free_tensor(void *arg)
{
    job_tensor *j = arg;
    free(j->data);
    free(j->name);
    free(j);
}

/* Reads tensor `name` here (from the prefetched slot when acquired) and
 * queues its write. */
static fs_status queue_copy(fs_ctx *ctx, fs_writer *wr, fs_outckpt *o, const fs_ckpt *c, const char *name,
                            fs_trace *tr, int layer)
{
    job_tensor *j = calloc(1, sizeof *j);
    if (!j || !(j->name = strdup(name))) { free(j); return fs_ctx_err(ctx, FS_ERR_NOMEM, "%s", name); }
    j->o = o;
    j->tr = tr;
    j->layer = layer;
    fs_status rc = fs_out_read_copy(ctx, c, name, &j->dt, &j->ndim, j->shape, &j->data);
    if (rc != FS_OK) { free_tensor(j); return rc; }
    uint64_t bytes = fs_dtype_size(j->dt);
    for (int d = 0; d < j->ndim; d++) bytes *= (uint64_t)j->shape[d];
    return fs_writer_submit(ctx, wr, run_tensor, j, free_tensor, bytes);
}

fs_status fs_calib_windows(fs_ctx *ctx, const fs_tokens *t, const char *path, int64_t nsamples,
                           int64_t L, uint64_t seed, uint32_t **ids)
{
    *ids = NULL;
    size_t nw = fs_tokens_windows(t, (size_t)L, NULL);
    if ((int64_t)nw < nsamples)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--calib %s: %zu tokens hold %zu windows of %lld tokens, "
                          "but --samples %lld needs %lld", path, t->n, nw, (long long)L,
                          (long long)nsamples, (long long)nsamples);
    size_t *st = malloc(sizeof(size_t) * (nw ? nw : 1));
    uint32_t *out = fs_alloc2((size_t)nsamples, (size_t)L * sizeof(uint32_t));
    if (!st || !out) { free(st); free(out); return fs_ctx_err(ctx, FS_ERR_NOMEM, "calibration windows"); }
    fs_tokens_windows(t, (size_t)L, st);
    uint64_t s = seed;
    for (int64_t i = 0; seed && i < nsamples; i++) {      /* partial Fisher-Yates, splitmix64 */
        s += 0x9e3779b97f4a7c15ull;
        uint64_t z = s;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        size_t j = (size_t)i + (size_t)(z % (nw - (size_t)i));
        size_t tmp = st[i]; st[i] = st[j]; st[j] = tmp;
    }
    for (int64_t i = 0; i < nsamples; i++) memcpy(out + i * L, t->ids + st[i], sizeof(uint32_t) * (size_t)L);
    free(st);
    *ids = out;
    return FS_OK;
}

typedef struct pstate {
    fs_ctx *ctx;
    const fs_fwd *f;
    const fs_pipe_opts *po;
    fs_outckpt *o;
    fs_writer *wr;
    const fs_mlayer *L;
    fs_acts *x;
    int64_t nseq, T, bseq;
    double worst, sum;       /* relative losses of the layer */
    const char *worst_name;
    int nq, retries, fallbacks;
    double tfwd;             /* start of the forward time not yet traced */
    double t_start;          /* when the first layer started (for the ETA) */
    int nlayers;
    int64_t hin;             /* width of the Hessian being accumulated */
    double read_gbps;        /* the prefetcher's rate so far */
    /* MoE waves: quantized experts are held until the wave's downs are done,
     * then written in the description's order, so the output does not
     * depend on the wave size */
    int holding;
    job_linear **held;
    int nheld, cap_held;
    int l0;                  /* the first layer this process runs (a resume starts later) */
    int kept;                /* linears written unquantized (--quantize-experts-only) */
    /* the layer forward on the backend (src/forward/layer.h) */
    fs_backend *be;
    fs_lwb *wb;              /* the layer's weights there (quantized ones replaced as solved) */
    fs_fwd_ws *ws;           /* a batch's buffers there */
    fs_buf *hbuf;            /* the Hessian(s) being accumulated: [count * hin, hin] */
    int hw0;                 /* the first expert of a wave's Hessians */
    int64_t *seen;           /* rows each expert of the wave received */
    double *qwait, *qpass;   /* run totals: the host's waits for the queues in passes, the passes */
    float **wsolve;          /* the host solver's copies of a linear and its Hessian (grown, reused: */
    size_t *wsolve_cap;      /* a fresh one per linear costs its page faults every time) */
    fs_solve_ws *sws;        /* the backend solver's buffers (released at the layer's end) */
    void (*ahead)(void *arg);   /* (optional) run once the final pass has queued its last batch */
    void *ahead_arg;
} pstate;

/* On a terminal (and not --quiet): one line redrawn in place with the layer,
 * the stage, the ETA from the layers done so far and the peak memory.  The
 * per-layer log lines stay, so a log file gets only those. */
static void progress(const pstate *p, const char *what)
{
    if (p->ctx->quiet || !isatty(2)) return;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    const int l = p->L->index, n = p->nlayers;
    const int done = l - p->l0;
    double el = fs_now() - p->t_start, eta = done > 0 ? el / done * (n - l) : 0.0;
    fprintf(stderr, "\r[%3d/%3d] model.layers.%d  %-22s  ETA %s%.0f s  read %.2f GB/s  peak RSS %.2f GB\033[K", l + 1,
            n, l, what, done > 0 ? "" : "~", eta, p->read_gbps, (double)ru.ru_maxrss / 1e6);
    fflush(stderr);
}

/* The forward time since tfwd goes to the trace; the clock restarts. */
static void fwd_mark(pstate *p)
{
    double t = fs_now();
    if (t > p->tfwd) fs_trace_span(p->po->trace, FS_STAGE_FORWARD, p->L->index, NULL, p->tfwd, t, 0, 0);
    p->tfwd = t;
}

/* fs_acts_load, traced: in a spilled run, a batch coming in (waits and the
 * conversion) is the spill stage, not the forward. */
static fs_status load(pstate *p, int64_t row0, int64_t n, float *dst)
{
    if (!p->x->sp) return fs_acts_load(p->ctx, p->x, row0, n, dst);
    fwd_mark(p);
    fs_status rc = fs_acts_load(p->ctx, p->x, row0, n, dst);
    double t = fs_now();
    fs_trace_span(p->po->trace, FS_STAGE_SPILL, p->L->index, NULL, p->tfwd, t,
                  (uint64_t)n * (uint64_t)p->f->H * (uint64_t)p->x->elem, 0);
    p->tfwd = t;
    return rc;
}

/* The host solver's copies (the run's buffer, grown): linear i's weight
 * [out, in] (when W) and the Hessian H [in, in] (when Hh), downloaded. */
static fs_status host_copies(pstate *p, const fs_mlinear *x, fs_tensor wv, fs_tensor H, float **W, float **Hh)
{
    const uint64_t wbytes = (uint64_t)(x->out * x->in) * 4, hbytes = (uint64_t)(x->in * x->in) * 4;
    if (*p->wsolve_cap < (size_t)(wbytes + hbytes)) {
        free(*p->wsolve);
        *p->wsolve = malloc((size_t)(wbytes + hbytes));
        *p->wsolve_cap = *p->wsolve ? (size_t)(wbytes + hbytes) : 0;
        if (!*p->wsolve) return fs_ctx_err(p->ctx, FS_ERR_NOMEM, "%s: %lld x %lld for the solver", x->name,
                                           (long long)x->out, (long long)x->in);
    }
    fs_status rc = FS_OK;
    if (W) {
        *W = *p->wsolve;
        rc = fs_be_download(p->ctx, p->be, FS_QUEUE_COMPUTE, *W, wv.buf, wv.off, wbytes);
    }
    if (Hh && rc == FS_OK) {
        *Hh = *p->wsolve + x->out * x->in;
        rc = fs_be_download(p->ctx, p->be, FS_QUEUE_COMPUTE, *Hh, H.buf, H.off, hbytes);
    }
    return rc == FS_OK ? fs_be_sync(p->ctx, p->be, FS_QUEUE_COMPUTE) : rc;
}

/* Quantizes linear i of the layer with H (a view of the Hessian on the
 * backend; round to nearest when force_rtn, H then only measures the loss),
 * writes it, swaps in the dequant.  The backend's buffer holds the layer's
 * only copy of the weights: the backend solver replaces it with the dequant
 * there; the host solver's copy comes down and its dequant goes back up. */
static fs_status quantize_one(pstate *p, int i, fs_tensor H, int force_rtn)
{
    const fs_mlinear *x = &p->L->lin[i];
    if (fs_interrupted())
        return fs_ctx_err(p->ctx, FS_ERR_ABORTED, "interrupted by signal %d in model.layers.%d", fs_interrupted(),
                          p->L->index);
    const fs_tensor wv = fs_lwb_weight(p->wb, i);
    const uint64_t wbytes = (uint64_t)(x->out * x->in) * 4;
    fs_layer_result r;
    fs_quant_opts q = p->po->q;
    if (force_rtn) q.rtn = 1;
    /* the backend solver unless an option has no op (or the test hook asks for the host's) */
    const int on_be = fs_solve_be_supports(&q, NULL) && !fs_test_env("FORGE_STREAM_TEST_SOLVER");
    float *W = NULL, *Hh = NULL;
    fs_status rc = !on_be || p->po->on_linear ? host_copies(p, x, wv, H, on_be ? NULL : &W, &Hh) : FS_OK;
    if (rc != FS_OK) return rc;
    double tq = fs_now(), wn = 0.0;
    if (on_be) {
        rc = fs_solve_be(p->ctx, p->be, FS_QUEUE_COMPUTE, p->sws, wv, H, &q, &r, &wn);
        fs_crashpoint(p->ctx, "gptq");
        if (rc != FS_OK) return rc;
    } else {
        rc = fs_layer_quantize(p->ctx, W, Hh, NULL, x->out, x->in, &q, &r);
        fs_crashpoint(p->ctx, "gptq");
        if (rc != FS_OK) return rc;
        /* the same rows as the losses' estimate when those are estimated (loss_f32) */
        rc = p->po->q.loss_f32 ? fs_quad_loss_est(p->ctx, W, NULL, Hh, x->out, x->in, &wn)
                               : fs_quad_loss_f32(p->ctx, W, NULL, Hh, x->out, x->in, &wn);
        if (rc != FS_OK) {
            fs_layer_result_free(&r);
            return rc;
        }
    }
    /* the solver's stages, in the order they ran (grid first, then inversion, solve);
     * gptq runs to now: the solve and its bookkeeping (buffers, permutations, losses) */
    fs_trace *tr = p->po->trace;
    const int li = p->L->index;
    const double o = (double)x->out, in = (double)x->in, tg = tq + r.grid_s, tc = tg + r.chol_s;
    fs_trace_span(tr, FS_STAGE_GRID, li, x->name, tq, tg, (uint64_t)(x->out * x->in) * 4, 0);
    const int solved = !q.rtn && !r.fallback_rtn;   /* RTN: no inversion (a fallback: no solve) to count */
    fs_trace_span(tr, FS_STAGE_CHOLESKY, li, x->name, tg, tc, !q.rtn ? (uint64_t)(x->in * x->in) * 4 : 0,
                  !q.rtn ? in * in * in * 2.0 / 3.0 : 0.0);
    fs_trace_span(tr, FS_STAGE_GPTQ, li, x->name, tc, fs_now(), (uint64_t)(x->out * x->in) * 4, solved ? o * in * in : 0.0);
    double rel = wn > 0 ? r.loss / wn : 0.0;
    if (rel >= p->worst) { p->worst = rel; p->worst_name = strrchr(x->name, '.') + 1; }
    p->sum += rel;
    p->nq++;
    p->retries += r.retries;
    p->fallbacks += r.fallback_rtn;
    if (r.retries || r.fallback_rtn)
        fs_log(p->ctx, "%s: %d damping retries (damp %g)%s", x->name, r.retries, r.damp_used,
               r.fallback_rtn ? ", fell back to RTN" : "");
    if (p->po->on_linear && on_be) {        /* the observer gets the dequant too (a test's download) */
        r.dequant = malloc((size_t)wbytes);
        rc = r.dequant ? fs_be_download(p->ctx, p->be, FS_QUEUE_COMPUTE, r.dequant, wv.buf, wv.off, wbytes)
                       : fs_ctx_err(p->ctx, FS_ERR_NOMEM, "%s: dequant", x->name);
        if (rc == FS_OK) rc = fs_be_sync(p->ctx, p->be, FS_QUEUE_COMPUTE);
        if (rc != FS_OK) {
            fs_layer_result_free(&r);
            return rc;
        }
    }
    if (p->po->on_linear) p->po->on_linear(p->po->arg, p->L->index, x->name, Hh, x->in, &r);
    /* later passes see the quantized weight; the packing and writing go to the writer */
    if (!on_be) {
        rc = fs_be_upload(p->ctx, p->be, FS_QUEUE_COMPUTE, wv.buf, wv.off, r.dequant, wbytes);
        if (rc == FS_OK) rc = fs_be_sync(p->ctx, p->be, FS_QUEUE_COMPUTE);        /* the dequant goes next */
        if (rc != FS_OK) {
            fs_layer_result_free(&r);
            return rc;
        }
    }
    free(r.dequant);
    r.dequant = NULL;
    job_linear *j = calloc(1, sizeof *j);
    if (!j || !(j->name = strdup(x->name))) {
        free(j);
        fs_layer_result_free(&r);
        return fs_ctx_err(p->ctx, FS_ERR_NOMEM, "%s", x->name);
    }
    j->o = p->o;
    j->r = r;
    j->tr = p->po->trace;
    j->layer = p->L->index;
    j->lin = i;
    j->bytes = (uint64_t)(x->out * x->in) * 2 + (uint64_t)x->in * 4;
    if (p->holding) {
        if (p->nheld == p->cap_held) {
            int cap = p->cap_held ? 2 * p->cap_held : 64;
            job_linear **h = realloc(p->held, sizeof *h * (size_t)cap);
            if (!h) { free_linear(j); return fs_ctx_err(p->ctx, FS_ERR_NOMEM, "held linears"); }
            p->held = h;
            p->cap_held = cap;
        }
        p->held[p->nheld++] = j;
        return FS_OK;
    }
    return fs_writer_submit(p->ctx, p->wr, run_linear, j, free_linear, j->bytes);
}

/* Submits the held linears in the layer description's order (or, after an
 * error, frees them). */
static fs_status flush_held(pstate *p, fs_status rc)
{
    for (int a = 1; a < p->nheld; a++)                   /* insertion sort: small, nearly sorted */
        for (int b = a; b > 0 && p->held[b - 1]->lin > p->held[b]->lin; b--) {
            job_linear *t = p->held[b];
            p->held[b] = p->held[b - 1];
            p->held[b - 1] = t;
        }
    for (int k = 0; k < p->nheld; k++) {
        if (rc == FS_OK) rc = fs_writer_submit(p->ctx, p->wr, run_linear, p->held[k], free_linear, p->held[k]->bytes);
        else free_linear(p->held[k]);
    }
    p->nheld = 0;
    return rc;
}

/* The host side of the batches: two staging slots of F32 [n, H] activations,
 * so the host loads batch i + 1 (from memory or the spill) while the
 * backend computes batch i.  up[k]: recorded on the compute queue after
 * slot k's upload; dn[k]: on the download queue after the download into it;
 * a slot is refilled only after both are reached (backend.h invariants 2-3). */
typedef struct scratch {
    fs_backend *be;
    float *xb[2];
    fs_event *up[2], *dn[2];
    fs_event *done;          /* compute: a batch's layer work queued so far */
    float *xr;               /* a plain host batch (routing, MoE statistics) */
} scratch;

static void scratch_free(scratch *s)
{
    if (s->be) {                       /* after an error a copy into a slot may still be queued */
        fs_ctx lc;
        fs_ctx_init(&lc);
        (void)fs_be_sync_all(&lc, s->be);
    }
    for (int k = 0; k < 2; k++) {
        if (s->be) fs_be_host_free(s->be, s->xb[k]);
        if (s->be) fs_be_event_free(s->be, s->up[k]);
        if (s->be) fs_be_event_free(s->be, s->dn[k]);
    }
    if (s->be) fs_be_event_free(s->be, s->done);
    free(s->xr);
    memset(s, 0, sizeof *s);
}

static fs_status scratch_new(fs_ctx *ctx, fs_backend *be, const fs_fwd *f, int64_t n, scratch *s)
{
    memset(s, 0, sizeof *s);
    s->be = be;
    const uint64_t bytes = (uint64_t)n * (uint64_t)f->H * 4;
    fs_status rc = FS_OK;
    for (int k = 0; rc == FS_OK && k < 2; k++) {
        void *p = NULL;
        rc = fs_be_host_alloc(ctx, be, bytes ? bytes : 4, &p);
        s->xb[k] = p;
        if (rc == FS_OK) rc = fs_be_event_new(ctx, be, &s->up[k]);
        if (rc == FS_OK) rc = fs_be_event_new(ctx, be, &s->dn[k]);
    }
    if (rc == FS_OK) rc = fs_be_event_new(ctx, be, &s->done);
    if (rc == FS_OK && !(s->xr = fs_alloc2((size_t)n, (size_t)f->H * 4)))
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "activations of a batch of %lld tokens", (long long)n);
    if (rc != FS_OK) scratch_free(s);
    return rc;
}

/* The tap of the layer forward (src/forward/layer.h): the captured rows go
 * into the Hessian being accumulated (p->hbuf; an expert's into its block of
 * p->hwave), traced as the hessian stage. */
static fs_status tap_hess(fs_ctx *ctx, void *arg, int point, int expert, fs_tensor x)
{
    (void)point;
    pstate *p = arg;
    fwd_mark(p);
    fs_tensor H = fs_tensor_2d(p->hbuf, 0, FS_DT_F32, p->hin, p->hin);
    if (expert >= 0) {
        H = fs_tensor_2d(p->hbuf, (uint64_t)(expert - p->hw0) * (uint64_t)(p->hin * p->hin) * 4, FS_DT_F32, p->hin,
                         p->hin);
        p->seen[expert - p->hw0] += x.rows;
    }
    fs_status rc = fs_op_hess_acc(ctx, p->be, FS_QUEUE_COMPUTE, H, x);
    double t = fs_now();
    fs_trace_span(p->po->trace, FS_STAGE_HESSIAN, p->L->index, NULL, p->tfwd, t,
                  (uint64_t)(x.rows * p->hin) * 4, (double)x.rows * (double)p->hin * (double)p->hin);
    p->tfwd = t;
    return rc;
}

/* A batch of the host's x (n rows) onto the backend (compute queue). */
static fs_status up_batch(pstate *p, const float *x, int64_t n)
{
    return fs_be_upload(p->ctx, p->be, FS_QUEUE_COMPUTE, p->ws->x.buf, 0, x, (uint64_t)(n * p->f->H) * 4);
}

/* x rounded on the backend to the activations' dtype (BF16: through a BF16
 * copy, the rounding fs_acts_store does on the host), so the rest of the
 * layer sees what later passes will load. */
static fs_status round_acts(pstate *p, int64_t n)
{
    if (p->x->elem == 4) return FS_OK;
    fs_tensor x = fs_tensor_2d(p->ws->x.buf, 0, FS_DT_F32, n, p->f->H);
    fs_tensor b = fs_tensor_2d(p->ws->xh.buf, 0, FS_DT_BF16, n, p->f->H);
    fs_status rc = fs_op_copy(p->ctx, p->be, FS_QUEUE_COMPUTE, b, x);
    return rc == FS_OK ? fs_op_copy(p->ctx, p->be, FS_QUEUE_COMPUTE, x, b) : rc;
}

/* One pass over the batches; stage decides what is computed and captured:
 * 0 attention input, 5 / 6 MLA q_b / kv_b inputs, 1 o_proj input, 2 the
 * post-attention norm (x moves mid-layer), 3 the MLP's down input, 4 the
 * rest of the layer (x moves to the next layer's input; a MoE layer's final
 * pass), 7 / 8 the gate/up and down inputs of the experts [e0, e1) of a wave.
 * The layer forward is src/forward/layer.h's; this decides only where it
 * stops and what moves.
 *
 * Batches are pipelined (scratch's slots): batch i is loaded into slot i % 2
 * and uploaded on the compute queue; its layer work follows there; when x
 * moves, the download queue waits for that work (an event) and downloads x
 * into the slot, and the host stores batch i - 1 meanwhile.  The compute
 * queue waits for a download before the next upload overwrites the
 * backend's x.  No queue is drained inside the loop. */
enum { ST_ATTN_IN = 0, ST_O_IN = 1, ST_POST = 2, ST_DOWN = 3, ST_FINISH = 4, ST_QB = 5, ST_KVB = 6, ST_EXP_IN = 7,
       ST_EXP_DOWN = 8 };

/* fs_be_event_sync, the wait counted (the overlap figure of the log). */
static fs_status slot_sync(pstate *p, fs_event *e)
{
    double t = fs_now();
    fs_status rc = fs_be_event_sync(p->ctx, p->be, e);
    *p->qwait += fs_now() - t;
    return rc;
}

static fs_status pass(pstate *p, int stage, scratch *s, int capture, int e0, int e1, const int *all)
{
    fs_ctx *ctx = p->ctx;
    fs_backend *be = p->be;
    const fs_fwd *f = p->f;
    static const int tap_of[] = {FS_TAP_ATTN_IN, FS_TAP_O_IN, FS_TAP_FFN_IN, FS_TAP_DOWN, FS_TAP_NONE,
                                 FS_TAP_QB, FS_TAP_KVB, FS_TAP_EXP_IN, FS_TAP_EXP_DOWN};
    fs_taps tp = {.stop = tap_of[stage], .fn = capture ? tap_hess : NULL, .arg = p, .e0 = e0, .e1 = e1, .all = all};
    const fs_queue Q = FS_QUEUE_COMPUTE, DL = FS_QUEUE_DOWNLOAD;
    const int moves = stage == ST_POST || stage == ST_FINISH;
    /* x moves mid-layer into the other spill file (the layer's input stays
     * whole for the boundary job of the layer before); the finish overwrites */
    fs_status rc = fs_acts_begin(ctx, p->x, stage == ST_POST     ? FS_SPILL_MOVE
                                          : stage == ST_FINISH ? FS_SPILL_INPLACE
                                                               : FS_SPILL_READ);
    p->tfwd = fs_now();
    const double tpass = p->tfwd;
    int64_t pend0 = -1, pendn = 0;                       /* the batch whose download is queued, unstored */
    int pendk = 0, i = 0;
    for (int64_t s0 = 0; rc == FS_OK && s0 < p->nseq; s0 += p->bseq, i++) {
        const int64_t ns = p->nseq - s0 < p->bseq ? p->nseq - s0 : p->bseq, n = ns * p->T;
        const int k = i & 1;
        float *x = s->xb[k];
        fs_crashpoint(ctx, "forward");
        /* slot k: its upload (batch i - 2) ran, its download was stored */
        if ((rc = slot_sync(p, s->up[k])) != FS_OK) break;
        if ((rc = load(p, s0 * p->T, n, x)) != FS_OK) break;
        if (pend0 >= 0 && (rc = fs_be_wait(ctx, be, Q, s->dn[pendk])) != FS_OK) break;   /* x read out first */
        if ((rc = up_batch(p, x, n)) != FS_OK) break;
        if ((rc = fs_be_record(ctx, be, s->up[k], Q)) != FS_OK) break;
        if (stage == ST_POST) {
            rc = fs_fwd_attn_half(ctx, be, Q, f, p->wb, p->ws, ns, p->T, NULL);    /* x is now mid-layer */
            if (rc == FS_OK) rc = round_acts(p, n);                                /* (rounded as stored) */
        } else if (stage == ST_FINISH) {
            rc = fs_fwd_ffn_half(ctx, be, Q, f, p->wb, p->ws, n, NULL);            /* the next layer's input */
        } else if (stage <= ST_POST || stage == ST_QB || stage == ST_KVB) {
            rc = fs_fwd_attn_half(ctx, be, Q, f, p->wb, p->ws, ns, p->T, &tp);     /* a capture in attention */
        } else {
            rc = fs_fwd_ffn_half(ctx, be, Q, f, p->wb, p->ws, n, &tp);             /* down, the experts' inputs */
        }
        if (rc != FS_OK || !moves) continue;
        /* the download of x into slot k after the layer work, on its own queue */
        rc = fs_be_record(ctx, be, s->done, Q);
        if (rc == FS_OK) rc = fs_be_wait(ctx, be, DL, s->done);
        if (rc == FS_OK) rc = fs_be_download(ctx, be, DL, x, p->ws->x.buf, 0, (uint64_t)(n * f->H) * 4);
        if (rc == FS_OK) rc = fs_be_record(ctx, be, s->dn[k], DL);
        /* ST_POST: the norm of the rounded x and its capture follow the download */
        if (rc == FS_OK && stage == ST_POST && capture) rc = fs_fwd_ffn_half(ctx, be, Q, f, p->wb, p->ws, n, &tp);
        /* the batch before is stored while this one computes */
        if (rc == FS_OK && pend0 >= 0) {
            rc = slot_sync(p, s->dn[pendk]);
            if (rc == FS_OK) rc = fs_acts_store(ctx, p->x, pend0, pendn, s->xb[pendk]);
        }
        pend0 = s0 * p->T;
        pendn = n;
        pendk = k;
    }
    /* the next layer's weights come in while the backend runs the last batch */
    if (rc == FS_OK && stage == ST_FINISH && p->ahead) p->ahead(p->ahead_arg);
    if (rc == FS_OK && pend0 >= 0) {
        rc = slot_sync(p, s->dn[pendk]);
        if (rc == FS_OK) rc = fs_acts_store(ctx, p->x, pend0, pendn, s->xb[pendk]);
    }
    /* the slots are free again once their uploads ran (the next pass refills them) */
    for (int k = 0; rc == FS_OK && k < 2; k++) rc = slot_sync(p, s->up[k]);
    rc = fs_acts_end(ctx, p->x, rc);
    fwd_mark(p);
    *p->qpass += fs_now() - tpass;
    return rc;
}

/* Hessians [count * in, in] on the backend, zeroed, as p's tap target. */
static fs_status hess_begin(pstate *p, int64_t in, int count, int hw0)
{
    p->hin = in;
    p->hw0 = hw0;
    fs_status rc = fs_be_alloc(p->ctx, p->be, (uint64_t)count * (uint64_t)(in * in) * 4, "hessian", &p->hbuf);
    if (rc == FS_OK) rc = fs_op_fill(p->ctx, p->be, FS_QUEUE_COMPUTE, fs_tensor_2d(p->hbuf, 0, FS_DT_F32, count * in, in), 0.0);
    return rc;
}

/* The sums made symmetric; they stay on the backend: *H [count * in, in]
 * (the caller frees it, fs_be_free; NULL after an error). */
static fs_status hess_end(pstate *p, int count, fs_buf **H, fs_status rc)
{
    if (rc == FS_OK) rc = fs_op_hess_finish(p->ctx, p->be, FS_QUEUE_COMPUTE, fs_tensor_2d(p->hbuf, 0, FS_DT_F32, count * p->hin, p->hin), count);
    *H = NULL;
    if (rc == FS_OK) *H = p->hbuf;
    else fs_be_free(p->be, p->hbuf);
    p->hbuf = NULL;
    return rc;
}

/* Hessian k of the stack H [count * in, in]. */
static fs_tensor hess_view(fs_buf *H, int64_t in, int k)
{
    return fs_tensor_2d(H, (uint64_t)k * (uint64_t)(in * in) * 4, FS_DT_F32, in, in);
}

/* A pass that captures into a new *H [in, in] on the backend (caller frees). */
static fs_status capture(pstate *p, int stage, scratch *s, int64_t in, fs_buf **H)
{
    *H = NULL;
    fs_status rc = hess_begin(p, in, 1, 0);
    if (rc == FS_OK) rc = pass(p, stage, s, 1, 0, 0, NULL);
    return hess_end(p, 1, H, rc);
}

/* A pass that captures, then the quantization of linears [i0, i1) with it.
 * --quantize-experts-only keeps every linear this is called for (they were
 * copied when the layer came in): only the passes that move x run. */
static fs_status capture_and_quantize(pstate *p, int stage, scratch *s, int64_t in, int i0, int i1)
{
    if (p->po->experts_only) return stage == ST_POST ? pass(p, stage, s, 0, 0, 0, NULL) : FS_OK;
    char what[64];
    const char *nm = strrchr(p->L->lin[i0].name, '.');
    snprintf(what, sizeof what, "%s%s", nm ? nm + 1 : p->L->lin[i0].name, i1 - i0 > 1 ? " ..." : "");
    progress(p, what);
    fs_buf *H = NULL;
    fs_status rc = capture(p, stage, s, in, &H);
    for (int i = i0; rc == FS_OK && i < i1; i++) rc = quantize_one(p, i, hess_view(H, in, 0), 0);
    fs_be_free(p->be, H);
    return rc;
}

/* ---- MoE layers ------------------------------------------------------------ */

/* The Hessians of the experts [e0, e1) of one wave in one pass over the
 * calibration batches: gate/up's from each expert's post-norm rows (down ==
 * 0), or down's from silu(gate) * up of them with its current (quantized)
 * gate/up (down == 1).  An expert's rows are the tokens routed to it (the
 * routing of the layer forward, the same as pass R's), or all of them when
 * all[e].  Each expert accumulates batch by batch, its rows of each batch in
 * one call, so its Hessian does not depend on which experts share its wave:
 * the output is the same for any wave size.  *H [(e1 - e0) * in, in] on the
 * backend, block e - e0 expert e's (zero for an expert without rows). */
static fs_status wave_hess(pstate *p, scratch *s, int e0, int e1, const int *all, int down, fs_buf **H)
{
    const int ne = e1 - e0;
    p->seen = calloc((size_t)ne, sizeof *p->seen);
    fs_status rc = p->seen ? FS_OK : fs_ctx_err(p->ctx, FS_ERR_NOMEM, "wave of %d experts", ne);
    if (rc == FS_OK) rc = hess_begin(p, down ? p->f->Ie : p->f->H, ne, e0);
    if (rc == FS_OK) rc = pass(p, down ? ST_EXP_DOWN : ST_EXP_IN, s, 1, e0, e1, all);
    rc = hess_end(p, ne, H, rc);
    free(p->seen);
    p->seen = NULL;
    return rc;
}

/* Passes C..E of a MoE layer (see the file comment); x goes mid-layer -> next input. */
static fs_status moe_layer(pstate *p, scratch *s)
{
    fs_ctx *ctx = p->ctx;
    const fs_fwd *f = p->f;
    const fs_pipe_opts *po = p->po;
    const fs_mlayer *L = p->L;
    const int64_t H = f->H, n = p->nseq * p->T, E = f->E, K = f->topk;
    const int e0 = p->wb->e0;
    const int64_t minr = po->min_expert_tokens > 1 ? po->min_expert_tokens : 1;
    fs_buf *Hx = NULL;
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(n * K));
    int64_t *count = calloc((size_t)E, sizeof(int64_t));
    int *under = calloc((size_t)E, sizeof(int)), *all = calloc((size_t)E, sizeof(int));
    fs_status rc = FS_OK;
    if (!idx || !count || !under || !all) {
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "routing of %lld tokens", (long long)n);
        goto out;
    }
    /* C: x -> mid-layer, the full-input Hessian (shared expert, policies) */
    if ((rc = capture(p, ST_POST, s, H, &Hx)) != FS_OK) goto out;
    const int g0 = p->wb->g0;
    if (e0 > g0 && !po->experts_only) {   /* shared expert(s) (qwen2_moe, DeepSeek): gate, up, down */
        for (int i = g0; rc == FS_OK && i <= g0 + 1; i++) rc = quantize_one(p, i, hess_view(Hx, H, 0), 0);
        if (rc == FS_OK) rc = capture_and_quantize(p, ST_DOWN, s, f->Is, g0 + 2, g0 + 3);
        if (rc != FS_OK) goto out;
    }
    /* R: routing by the f32 router, batch by batch as the final pass does */
    rc = fs_acts_begin(ctx, p->x, FS_SPILL_READ);
    p->tfwd = fs_now();
    for (int64_t s0 = 0; rc == FS_OK && s0 < p->nseq; s0 += p->bseq) {
        const int64_t ns = p->nseq - s0 < p->bseq ? p->nseq - s0 : p->bseq, nb = ns * p->T;
        const fs_taps norm_only = {.stop = FS_TAP_FFN_IN};
        if ((rc = load(p, s0 * p->T, nb, s->xr)) != FS_OK) break;
        if ((rc = up_batch(p, s->xr, nb)) != FS_OK) break;
        rc = fs_fwd_ffn_half(ctx, p->be, FS_QUEUE_COMPUTE, f, p->wb, p->ws, nb, &norm_only);
        if (rc == FS_OK) rc = fs_fwd_route(ctx, p->be, FS_QUEUE_COMPUTE, f, p->wb, p->ws, nb);
        if (rc == FS_OK)
            rc = fs_be_download(ctx, p->be, FS_QUEUE_COMPUTE, idx + s0 * p->T * K, p->ws->idx.buf, 0,
                                sizeof(int32_t) * (uint64_t)(nb * K));
        if (rc == FS_OK) rc = fs_be_sync(ctx, p->be, FS_QUEUE_COMPUTE);
    }
    fwd_mark(p);
    if ((rc = fs_acts_end(ctx, p->x, rc)) != FS_OK) goto out;
    for (int64_t i = 0; i < n * K; i++) count[idx[i]]++;
    int64_t mn = count[0], mx = count[0], nunder = 0;
    for (int64_t e = 0; e < E; e++) {
        mn = count[e] < mn ? count[e] : mn;
        mx = count[e] > mx ? count[e] : mx;
        under[e] = count[e] < minr;
        nunder += under[e];
    }
    fs_log(ctx, "model.layers.%d: calibration tokens per expert min %lld median %.1f max %lld (%lld experts, top-%lld)",
           L->index, (long long)mn, fs_moe_median(count, (int)E), (long long)mx, (long long)E, (long long)K);
    for (int64_t e = 0; e < E; e++)
        if (under[e]) {
            char nm[512];
            fs_moe_expert_name(L, (int)e, nm, sizeof nm);
            fs_log(ctx, "model.layers.%d: under-calibrated expert %s: %lld tokens (< %lld): policy %s",
                   L->index, nm, (long long)count[e], (long long)minr, fs_expert_policy_name(po->expert_policy));
        }
    if (nunder)
        fs_log(ctx, "model.layers.%d: %lld of %lld experts below %lld tokens, policy %s", L->index,
               (long long)nunder, (long long)E, (long long)minr, fs_expert_policy_name(po->expert_policy));
    if (po->moe_report && (rc = fs_moe_report_add(ctx, po->moe_report, L->index, (int)E, count, under)) != FS_OK)
        goto out;
    /* experts in waves: gate/up Hessians of the wave's experts in one pass,
     * quantize them, then their down Hessians in another, quantize those
     * (the solver's buffers of the shared experts go first: the waves are
     * sized for the experts' own, src/pipeline/plan.c) */
    fs_solve_ws_release(p->be, p->sws);
    const int64_t wave = po->experts_per_wave > 0 && po->experts_per_wave < E ? po->experts_per_wave : E;
    for (int64_t e = 0; e < E; e++) all[e] = under[e] && po->expert_policy == FS_EXPERT_ALL_TOKENS;
    for (int64_t w0 = 0; rc == FS_OK && w0 < E; w0 += wave) {
        const int w1 = (int)(w0 + wave < E ? w0 + wave : E);
        const double te = fs_now();
        p->holding = 1;
        fs_buf *He = NULL, *Hd = NULL;
        if (rc == FS_OK) rc = wave_hess(p, s, (int)w0, w1, all, 0, &He);
        for (int e = (int)w0; rc == FS_OK && e < w1; e++) {
            /* shared: gate/up from the layer's full-input Hessian; rtn: round to nearest
             * (its own Hessian only measures the loss) */
            const int pol = under[e] ? (int)po->expert_policy : -1, ig = e0 + 3 * e;
            const fs_tensor Hgu = pol == FS_EXPERT_SHARED ? hess_view(Hx, H, 0) : hess_view(He, H, e - (int)w0);
            for (int i = ig; rc == FS_OK && i < ig + 2; i++) rc = quantize_one(p, i, Hgu, pol == FS_EXPERT_RTN);
        }
        fs_be_free(p->be, He);                    /* before the down Hessians */
        if (rc == FS_OK) rc = wave_hess(p, s, (int)w0, w1, all, 1, &Hd);
        for (int e = (int)w0; rc == FS_OK && e < w1; e++) {
            const int pol = under[e] ? (int)po->expert_policy : -1;
            rc = quantize_one(p, e0 + 3 * e + 2, hess_view(Hd, f->Ie, e - (int)w0),
                              pol == FS_EXPERT_RTN || pol == FS_EXPERT_SHARED);
        }
        fs_be_free(p->be, Hd);
        p->holding = 0;
        rc = flush_held(p, rc);
        char en[96];
        int64_t toks = 0;
        for (int e = (int)w0; e < w1; e++) toks += all[e] ? n : count[e];
        snprintf(en, sizeof en, "experts %lld-%d (%lld rows)", (long long)w0, w1 - 1, (long long)toks);
        fs_trace_span(po->trace, FS_STAGE_EXPERT, L->index, en, te, fs_now(), (uint64_t)toks * (uint64_t)H * 4, 0);
    }
    fs_be_free(p->be, Hx);                               /* (the final pass does not need it) */
    Hx = NULL;
    /* E: x += MoE(norm(x)) with the quantized experts */
    if (rc == FS_OK) rc = pass(p, ST_FINISH, s, 0, 0, 0, NULL);
out:
    p->holding = 0;
    rc = flush_held(p, rc);                              /* frees what an error left held */
    free(p->held);
    p->held = NULL;
    p->cap_held = 0;
    fs_be_free(p->be, Hx);
    free(idx); free(count); free(under); free(all);
    return rc;
}

/* The layer reader's bookkeeping for the read track of the trace. */
typedef struct reader_state {
    fs_layer_reader *lr;
    double t_sub, busy_prev, wait_s;
    fs_prefetch_stats pst;
} reader_state;

/* Layer l coming in: its bytes from the reader (acquired: the caller
 * releases it), the next layer's read started, its weights decoded on the
 * host and uploaded into wb on the upload queue, ev recorded after; the
 * host copy is freed once the upload ran (the backend holds the only one).
 * On an error the slot is released and nothing is held. */
static fs_status layer_fetch(fs_ctx *ctx, fs_ckpt *c, const fs_model *m, const fs_fwd *f, const fs_pipe_opts *po,
                             reader_state *rs, fs_backend *be, fs_event *ev, fs_buf **keep, int l, fs_lwb *wb)
{
    static const fs_qinfo none = {0};
    const fs_mlayer *L = &m->layers[l];
    double tl = fs_now();
    fs_lw w = {0};
    memset(wb, 0, sizeof *wb);
    fs_status rc = fs_lr_acquire(ctx, rs->lr, l);                    /* waits only if reading lags */
    if (rc != FS_OK) return rc;
    rs->wait_s += fs_now() - tl;
    fs_crashpoint(ctx, "read");
    /* the read track: the I/O busy time spent since the previous layer came in,
     * placed from the layer's submission (reads run in the background) */
    fs_lr_stats(rs->lr, &rs->pst);
    fs_trace_span(po->trace, FS_STAGE_READ, l, NULL, rs->t_sub, rs->t_sub + (rs->pst.busy_s - rs->busy_prev),
                  fs_lr_bytes(rs->lr, l), 0);
    rs->busy_prev = rs->pst.busy_s;
    rs->t_sub = fs_now();
    rc = fs_lr_start(ctx, rs->lr, l + 1);                             /* next layer reads meanwhile */
    double tu = fs_now();
    if (rc == FS_OK) rc = fs_lw_load(ctx, c, &none, m, f, l, &w);  /* decoded into the compute layout: the upload stage */
    /* the weights go up on the upload queue; the compute queue waits for ev */
    if (rc == FS_OK) rc = fs_lwb_upload(ctx, be, FS_QUEUE_UPLOAD, f, L, &w, keep, wb);
    if (rc == FS_OK) rc = fs_be_record(ctx, be, ev, FS_QUEUE_UPLOAD);
    if (rc == FS_OK) rc = fs_be_event_sync(ctx, be, ev);            /* the host copy goes next */
    fs_trace_span(po->trace, FS_STAGE_UPLOAD, l, L->lin[0].name, tu, fs_now(), fs_lr_bytes(rs->lr, l), 0);
    if (rc != FS_OK) {
        fs_lwb_free(be, wb);
        fs_lr_release(rs->lr, l);
    }
    fs_lw_free(&w);
    return rc;
}

/* The look-ahead (fs_pipe_opts.lookahead): layer l fetched during the final
 * pass of layer l - 1; its error, if any, is kept and reported when layer l
 * starts (after l - 1 is committed, as without the look-ahead). */
typedef struct ahead {
    fs_ctx *ctx;
    fs_ckpt *c;
    const fs_model *m;
    const fs_fwd *f;
    const fs_pipe_opts *po;
    reader_state *rs;
    fs_backend *be;
    fs_event **ev;
    fs_buf **arena;
    int l, done;
    fs_status rc;
    char msg[sizeof(((fs_ctx *)0)->errmsg)];
    fs_lwb wb;
} ahead;

static void ahead_run(void *arg)
{
    ahead *a = arg;
    if (a->done) return;
    a->done = 1;
    a->rc = layer_fetch(a->ctx, a->c, a->m, a->f, a->po, a->rs, a->be, a->ev[a->l & 1], &a->arena[a->l & 1], a->l,
                        &a->wb);
    if (a->rc != FS_OK) snprintf(a->msg, sizeof a->msg, "%s", a->ctx->errmsg);
}

fs_status fs_pipeline_run(fs_ctx *ctx, fs_ckpt *c, const fs_model *m, const fs_fwd *f,
                          const uint32_t *ids, int64_t nseq, int64_t T, const fs_pipe_opts *po,
                          fs_outckpt *o)
{
    const int64_t H = f->H, n = nseq * T;
    float *E = NULL, *row = malloc(sizeof(float) * (size_t)H);
    fs_acts xs = {NULL, NULL, H, NULL, po->act_f32 ? 4 : 2};
    fs_acts *x = &xs;
    const fs_boundary_sink sink = {po->work, po->trace, po->commit_prep, po->commit, po->snap_free, po->commit_arg};
    fs_status rc = FS_OK;
    const int l0 = po->start_layer, live = l0 < m->nlayers;   /* decoder layers left to run */
    if (!live)
        ;                                            /* only MTP layers left: no activations */
    else if (po->spill && !po->work)
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "spilled activations need a work folder");
    else if (po->spill)                              /* one window per chunk: batches are whole windows */
        rc = fs_spill_new(ctx, po->work, (uint64_t)n, (uint64_t)(H * xs.elem), (uint64_t)T, &xs.sp);
    else if (xs.elem == 4)
        xs.f = fs_alloc2((size_t)n, (size_t)H * sizeof(float));
    else
        xs.b = fs_alloc2((size_t)n, (size_t)H * sizeof(uint16_t));
    if (rc == FS_OK && ((live && !xs.sp && !xs.f && !xs.b) || !row))
        rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "activations of %lld tokens x %lld", (long long)n, (long long)H);
    if (rc != FS_OK) {
        fs_spill_free(xs.sp); free(xs.f); free(xs.b); free(row);
        return rc;
    }
    if (xs.sp)
        fs_log(ctx, "activations: %.3f GB per boundary, spilled to %s (two raw files) and streamed %lld tokens at a time",
               (double)n * (double)H * xs.elem / 1e9, po->work, (long long)T);
    if (l0 == 0) {                                   /* the embeddings of the calibration tokens */
        rc = fs_ckpt_read_f32(ctx, c, "model.embed_tokens.weight", &E);
        if (rc == FS_OK) rc = fs_acts_begin(ctx, x, FS_SPILL_FILL);
        for (int64_t i = 0; rc == FS_OK && i < n; i++) {
            memcpy(row, E + (int64_t)ids[i] * H, sizeof(float) * (size_t)H);
            rc = fs_acts_store(ctx, x, i, 1, row);
        }
        rc = fs_acts_end(ctx, x, rc);
    } else if (l0 < m->nlayers) {                    /* resumed: the boundary the journal names */
        rc = fs_boundary_load(ctx, po->start_act, po->start_layer, x, n, H);
        if (rc == FS_OK) fs_log(ctx, "resumed at model.layers.%d from %s", l0, po->start_act);
    }
    free(E);
    free(row);
    const int64_t bseq = po->batch_tokens / T > 0 ? po->batch_tokens / T : 1;
    fs_writer *wr = NULL;
    /* the writer may fall a layer behind: resident, a boundary copy and a layer's linears */
    uint64_t pending = (xs.sp ? 0 : (uint64_t)(n * H) * 4) + (64ull << 20);
    if (rc == FS_OK) rc = fs_writer_new(ctx, pending > WRITER_MIN_PENDING ? pending : WRITER_MIN_PENDING, &wr);
    for (int i = 0; l0 == 0 && rc == FS_OK && i < m->nglobal; i++)   /* committed with layer 0 */
        if (fs_ckpt_find(c, m->global[i].name)) rc = queue_copy(ctx, wr, o, c, m->global[i].name, po->trace, -1);
    scratch s = {0};
    fs_fwd_ws ws = {0};
    fs_layer_reader *lr = NULL;
    fs_backend *be = ctx->be, *own = NULL;
    if (rc == FS_OK && live && !fs_backend_runs_forward(be)) {   /* a backend without every forward op: the forward on the cpu */
        rc = fs_backend_open(ctx, FS_BE_CPU, NULL, &own);
        be = own;
        if (rc == FS_OK) fs_log(ctx, "the layer forward runs on the cpu backend (%s has no forward ops yet)",
                                fs_backend_name(ctx->be));
    }
    fs_event *wev[2] = {NULL, NULL};   /* the upload queue: layer l's weights are up (wev[l & 1]) */
    fs_buf *arena[2] = {NULL, NULL};   /* layer l's weights in arena[l & 1], reused (layer l - 2 is done) */
    double qwait = 0.0, qpass = 0.0;
    float *wsolve = NULL;
    size_t wsolve_cap = 0;
    fs_solve_ws sws = {0};
    if (rc == FS_OK) rc = scratch_new(ctx, be, f, (bseq < nseq ? bseq : nseq) * T, &s);
    for (int k = 0; rc == FS_OK && k < 2; k++) rc = fs_be_event_new(ctx, be, &wev[k]);
    if (rc == FS_OK && live) rc = fs_fwd_ws_new(ctx, be, FS_QUEUE_COMPUTE, f, (bseq < nseq ? bseq : nseq) * T, &ws);
    if (rc == FS_OK) rc = fs_lr_new(ctx, c, m, 2, 1, 0, &lr);
    reader_state rs = {.lr = lr, .t_sub = fs_now()};
    if (rc == FS_OK) rc = fs_lr_start(ctx, lr, l0);
    double t0 = fs_now();
    ahead ah = {.ctx = ctx, .c = c, .m = m, .f = f, .po = po, .rs = &rs, .be = be, .ev = wev, .arena = arena, .l = -1};
    for (int l = l0; rc == FS_OK && l < m->nlayers; l++) {
        const fs_mlayer *L = &m->layers[l];
        if (fs_interrupted()) {
            rc = fs_ctx_err(ctx, FS_ERR_ABORTED, "interrupted by signal %d before model.layers.%d", fs_interrupted(), l);
            break;
        }
        fs_lwb wb;
        double tl = fs_now();
        if (ah.done && ah.l == l) {                  /* fetched during the layer before's last pass */
            ah.done = 0;
            if ((rc = ah.rc) != FS_OK) { fs_ctx_err(ctx, rc, "%s", ah.msg); break; }
            wb = ah.wb;
        } else if ((rc = layer_fetch(ctx, c, m, f, po, &rs, be, wev[l & 1], &arena[l & 1], l, &wb)) != FS_OK) {
            break;
        }
        for (int i = 0; rc == FS_OK && i < L->nother; i++)             /* norms, biases: from the slot */
            if (fs_ckpt_find(c, L->other[i].name)) rc = queue_copy(ctx, wr, o, c, L->other[i].name, po->trace, l);
        int kept = 0;                  /* --quantize-experts-only: all but the routed experts, as they are */
        for (int i = 0; po->experts_only && rc == FS_OK && i < L->nlin; i++)
            if (L->lin[i].expert < 0) {
                char wn[1100];
                snprintf(wn, sizeof wn, "%s.weight", L->lin[i].name);
                rc = queue_copy(ctx, wr, o, c, wn, po->trace, l);
                kept++;
            }
        fs_lr_release(lr, l);
        if (rc == FS_OK) rc = fs_be_wait(ctx, be, FS_QUEUE_COMPUTE, wev[l & 1]);   /* the weights are up */
        if (rc != FS_OK) { fs_lwb_free(be, &wb); break; }
        const fs_prefetch_stats pst = rs.pst;
        ah.l = l + 1;
        pstate p = {.ctx = ctx, .be = be, .qwait = &qwait, .qpass = &qpass, .wsolve = &wsolve, .wsolve_cap = &wsolve_cap, .sws = &sws,
                    .wb = &wb, .ws = &ws,
                    .ahead = po->lookahead && !own && l + 1 < m->nlayers ? ahead_run : NULL, .ahead_arg = &ah,
                    .kept = kept, .f = f, .po = po, .o = o, .wr = wr, .L = L, .x = x, .nseq = nseq,
                    .T = T, .bseq = bseq, .worst_name = "", .t_start = t0, .nlayers = m->nlayers,
                    .l0 = l0, .read_gbps = pst.busy_s > 0 ? (double)pst.bytes / 1e9 / pst.busy_s : 0.0};
        const int64_t qs = f->nh * f->hd;
        const int g0 = wb.g0;
        if (f->mla) {                  /* {q_a|q, kv_a}, q_b, kv_b, o (file comment) */
            const int kvb = f->qr ? 3 : 2, io = g0 - 1;   /* kv_b, o_proj (block-mla.c invariant 1) */
            rc = capture_and_quantize(&p, ST_ATTN_IN, &s, H, 0, 2);
            if (rc == FS_OK && f->qr) rc = capture_and_quantize(&p, ST_QB, &s, f->qr, 2, 3);
            if (rc == FS_OK) rc = capture_and_quantize(&p, ST_KVB, &s, f->kvr, kvb, kvb + 1);
            if (rc == FS_OK) rc = capture_and_quantize(&p, ST_O_IN, &s, f->nh * f->vh, io, io + 1);
        } else {
            rc = capture_and_quantize(&p, ST_ATTN_IN, &s, H, FS_Q, FS_V + 1);       /* q, k, v */
            if (rc == FS_OK) rc = capture_and_quantize(&p, ST_O_IN, &s, qs, FS_O, FS_O + 1);
        }
        if (rc == FS_OK && L->moe) {
            rc = moe_layer(&p, &s);                                         /* x -> next input */
        } else {
            if (rc == FS_OK) rc = capture_and_quantize(&p, ST_POST, &s, H, g0, g0 + 2);   /* x -> mid */
            if (rc == FS_OK) rc = capture_and_quantize(&p, ST_DOWN, &s, L->lin[g0].out, g0 + 2, g0 + 3);
            if (rc == FS_OK) rc = pass(&p, ST_FINISH, &s, 0, 0, 0, NULL);            /* x -> next input */
        }
        if (rc == FS_OK) rc = fs_boundary_queue(ctx, wr, &sink, l, x, n, H);
        fs_status src = fs_be_sync(ctx, be, FS_QUEUE_COMPUTE);   /* the layer's work is done */
        if (rc == FS_OK) rc = src;
        fs_lwb_free(be, &wb);
        fs_solve_ws_release(be, &sws);           /* the next layer's linears may be smaller */
        fs_trace_span(po->trace, FS_STAGE_LAYER, l, L->lin[0].name, tl, fs_now(), fs_lr_bytes(lr, l), 0);
        if (rc == FS_OK) {
            if (!ctx->quiet && isatty(2)) fputs("\r\033[K", stderr);   /* the progress line gives way */
            char ks[48] = "";
            if (p.kept) snprintf(ks, sizeof ks, "  %d kept unquantized", p.kept);
            fs_log(ctx, "[%3d/%3d] model.layers.%d  rel.loss mean %.3e worst %.3e (%s)  retries %d%s%s  %.1f s (total %.1f s)",
                   l + 1, m->nlayers, l, p.nq ? p.sum / p.nq : 0.0, p.worst, p.worst_name, p.retries,
                   p.fallbacks ? "  RTN FALLBACK" : "", ks, fs_now() - tl, fs_now() - t0);
        }
    }
    /* MTP layers: never run by the forward, so never calibrated: copied as they are */
    for (int l = l0 > m->nlayers ? l0 : m->nlayers; rc == FS_OK && l < m->nlayers + m->nmtp; l++) {
        char pre[64];
        int cnt = 0;
        snprintf(pre, sizeof pre, "model.layers.%d.", l);
        if ((rc = fs_lr_acquire(ctx, lr, l)) != FS_OK) break;
        if ((rc = fs_lr_start(ctx, lr, l + 1)) != FS_OK) break;
        for (size_t k = 0; rc == FS_OK && k < c->ntensors; k++) {
            const char *tn = c->entries[k].t->name;
            if (!strncmp(tn, pre, strlen(pre)) && !fs_ckpt_is_scale(c, tn)) {
                rc = queue_copy(ctx, wr, o, c, tn, po->trace, l);
                cnt++;
            }
        }
        fs_lr_release(lr, l);
        if (rc == FS_OK) rc = fs_boundary_queue(ctx, wr, &sink, l, NULL, 0, H);
        if (rc == FS_OK)
            fs_log(ctx, "[%3d/%3d] model.layers.%d: MTP layer (speculative decoding only, not run by the "
                   "calibration forward): %d tensors copied unquantized%s", l + 1, m->nlayers + m->nmtp, l, cnt,
                   c->fp8_block[0] ? ", FP8 dequantized to BF16" : "");
    }
    if (ah.done && ah.rc == FS_OK) {             /* fetched ahead, never run (an error or an interrupt) */
        fs_lr_release(lr, ah.l);
        fs_lwb_free(be, &ah.wb);
    }
    if (lr) {
        fs_prefetch_stats st;
        fs_lr_stats(lr, &st);
        fs_log(ctx, "read %.3f GB in %.2f s of I/O (%.2f GB/s%s%s); compute waited %.2f s for reads",
               (double)st.bytes / 1e9, st.busy_s, st.busy_s > 0 ? (double)st.bytes / 1e9 / st.busy_s : 0.0,
               st.direct ? ", O_DIRECT" : "", st.registered ? ", registered buffers" : "", rs.wait_s);
    }
    fs_lr_free(lr);
    if (rc == FS_OK && qpass > 0)
        fs_log(ctx, "queues (%s): the passes took %.2f s, the host waited %.2f s of it for its staging slots (the "
               "rest: loading, storing and queueing batches while the backend computes)", fs_backend_name(be), qpass,
               qwait);
    if (wr && rc == FS_OK && (rc = fs_writer_flush(ctx, wr)) == FS_OK) {
        fs_writer_stats ws;
        fs_writer_get_stats(wr, &ws);
        fs_log(ctx, "writer: %llu jobs, %.3f GB, %.2f s busy; compute waited %.2f s for it",
               (unsigned long long)ws.jobs, (double)ws.bytes / 1e9, ws.busy_s, ws.blocked_s);
    }
    fs_writer_free(NULL, wr);      /* after an error: drops what is queued (and the spill holds) */
    if (xs.sp && rc == FS_OK) {
        fs_spill_stats ss;
        fs_spill_get_stats(xs.sp, &ss);
        fs_log(ctx, "spilled activations: read %.3f GB%s, wrote %.3f GB; compute waited %.2f s for reads, %.2f s for "
               "writes, %.2f s for the boundary writer", (double)ss.bytes_read / 1e9, ss.direct ? " (O_DIRECT)" : "",
               (double)ss.bytes_written / 1e9, ss.read_wait_s, ss.write_wait_s, ss.hold_wait_s);
    }
    fs_spill_free(xs.sp);          /* removes the spill files */
    scratch_free(&s);
    for (int k = 0; k < 2; k++) fs_be_event_free(be, wev[k]);
    for (int k = 0; k < 2; k++) fs_be_free(be, arena[k]);
    free(wsolve);
    fs_fwd_ws_free(be, &ws);
    fs_backend_free(own);
    free(xs.f);
    free(xs.b);
    return rc;
}
