/* layerio.c: layers read ahead through the prefetcher (layerio.h).
 *
 * Owns: the prefetcher, per layer the list of entries and their extents, and
 * c->mem (allocated here, entries set while a layer is acquired).
 * Invariants:
 *  1. c->mem[i] is non-NULL only between acquire(l) and release(l) for the
 *     entries of layer l, and then points into the slot of l's ticket.
 *  2. A layer's extents are every tensor named "model.layers.<l>." plus the
 *     `_scale_inv` partners of its F8 tensors (which may sit in other shards).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/layerio.h"

typedef struct lplan {
    int n;
    uint32_t *entry;         /* entry indices into c->entries */
    fs_extent *ext;
    uint64_t bytes;
    int ticket;              /* -1 when not submitted */
} lplan;

struct fs_layer_reader {
    fs_ckpt *c;
    int nl;
    lplan *lp;
    char **paths;            /* per shard: dir/name */
    fs_prefetch *pf;
};

void fs_lr_free(fs_layer_reader *lr)
{
    if (!lr) return;
    fs_prefetch_free(lr->pf);
    for (int l = 0; l < lr->nl; l++) { free(lr->lp[l].entry); free(lr->lp[l].ext); }
    for (int s = 0; lr->paths && s < lr->c->nshards; s++) free(lr->paths[s]);
    free(lr->paths);
    free(lr->lp);
    free(lr->c->mem);
    lr->c->mem = NULL;
    free(lr);
}

static int add_entry(lplan *p, const fs_ckpt *c, const fs_ckpt_entry *e, char **paths)
{
    uint32_t *ne = realloc(p->entry, sizeof *ne * (size_t)(p->n + 1));
    if (!ne) return -1;
    p->entry = ne;
    fs_extent *nx = realloc(p->ext, sizeof *nx * (size_t)(p->n + 1));
    if (!nx) return -1;
    p->ext = nx;
    p->entry[p->n] = (uint32_t)(e - c->entries);
    p->ext[p->n] = (fs_extent){paths[e->shard], e->t->offset, e->t->nbytes};
    p->bytes += e->t->nbytes;
    p->n++;
    return 0;
}

fs_status fs_lr_new(fs_ctx *ctx, fs_ckpt *c, const fs_model *m, int slots, int direct,
                    uint64_t host_budget, fs_layer_reader **out)
{
    *out = NULL;
    fs_layer_reader *lr = calloc(1, sizeof *lr);
    if (!lr) return fs_ctx_err(ctx, FS_ERR_NOMEM, "layer reader");
    lr->c = c;
    lr->nl = m->nlayers + m->nmtp;
    lr->lp = calloc((size_t)lr->nl + 1, sizeof *lr->lp);
    lr->paths = calloc((size_t)c->nshards, sizeof *lr->paths);
    c->mem = calloc(c->ntensors + 1, sizeof *c->mem);
    fs_status rc = (!lr->lp || !lr->paths || !c->mem) ? fs_ctx_err(ctx, FS_ERR_NOMEM, "layer reader") : FS_OK;
    for (int s = 0; rc == FS_OK && s < c->nshards; s++) {
        size_t n = strlen(c->dir) + strlen(c->shard_names[s]) + 2;
        if (!(lr->paths[s] = malloc(n))) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "paths");
        else snprintf(lr->paths[s], n, "%s/%s", c->dir, c->shard_names[s]);
    }
    /* invariant 2: entries by layer prefix, plus the scales of F8 ones */
    for (size_t i = 0; rc == FS_OK && i < c->ntensors; i++) {
        const fs_ckpt_entry *e = &c->entries[i];
        int l = -1;
        if (sscanf(e->t->name, "model.layers.%d.", &l) != 1 || l < 0 || l >= lr->nl) continue;
        if (fs_ckpt_is_scale(c, e->t->name)) continue;            /* added with its weight */
        if (add_entry(&lr->lp[l], c, e, lr->paths) != 0) rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "extents");
        const fs_ckpt_entry *se = e->t->dtype == FS_DT_F8_E4M3 ? fs_ckpt_scale_of(c, e->t->name) : NULL;
        if (rc == FS_OK && se && add_entry(&lr->lp[l], c, se, lr->paths) != 0)
            rc = fs_ctx_err(ctx, FS_ERR_NOMEM, "extents");
    }
    fs_prefetch_opts o;
    fs_prefetch_opts_default(&o);
    o.slots = slots;
    o.direct = direct;
    uint64_t need = 4096;
    for (int l = 0; rc == FS_OK && l < lr->nl; l++) {
        uint64_t b = 0;
        lr->lp[l].ticket = -1;
        if (lr->lp[l].n && (rc = fs_prefetch_need(ctx, &o, lr->lp[l].ext, lr->lp[l].n, &b)) != FS_OK) break;
        if (b > need) need = b;
    }
    o.slot_bytes = (need + 4095) / 4096 * 4096;
    if (rc == FS_OK && host_budget && o.slot_bytes * (uint64_t)slots > host_budget)
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "the read-ahead ring needs %d x %.3f GB for the largest layer, "
                        "more than the host budget %.3f GB", slots, (double)o.slot_bytes / 1e9,
                        (double)host_budget / 1e9);
    if (rc == FS_OK) rc = fs_prefetch_new(ctx, &o, &lr->pf);
    if (rc != FS_OK) { fs_lr_free(lr); return rc; }
    *out = lr;
    return FS_OK;
}

fs_status fs_lr_start(fs_ctx *ctx, fs_layer_reader *lr, int l)
{
    if (l < 0 || l >= lr->nl || lr->lp[l].ticket >= 0 || lr->lp[l].n == 0) return FS_OK;
    return fs_prefetch_submit(ctx, lr->pf, lr->lp[l].ext, lr->lp[l].n, &lr->lp[l].ticket);
}

fs_status fs_lr_acquire(fs_ctx *ctx, fs_layer_reader *lr, int l)
{
    if (l < 0 || l >= lr->nl || lr->lp[l].n == 0) return FS_OK;
    fs_status rc = fs_lr_start(ctx, lr, l);
    if (rc != FS_OK) return rc;
    lplan *p = &lr->lp[l];
    const uint8_t **ptr = calloc((size_t)p->n, sizeof *ptr);
    if (!ptr) return fs_ctx_err(ctx, FS_ERR_NOMEM, "layer %d pointers", l);
    rc = fs_prefetch_wait(ctx, lr->pf, p->ticket, ptr);
    if (rc == FS_OK)
        for (int i = 0; i < p->n; i++) lr->c->mem[p->entry[i]] = ptr[i];   /* invariant 1 */
    else
        p->ticket = -1;
    free(ptr);
    return rc;
}

void fs_lr_release(fs_layer_reader *lr, int l)
{
    if (l < 0 || l >= lr->nl || lr->lp[l].ticket < 0) return;
    lplan *p = &lr->lp[l];
    for (int i = 0; i < p->n; i++) lr->c->mem[p->entry[i]] = NULL;
    fs_prefetch_release(lr->pf, p->ticket);
    p->ticket = -1;
}

uint64_t fs_lr_bytes(const fs_layer_reader *lr, int l)
{
    return l >= 0 && l < lr->nl ? lr->lp[l].bytes : 0;
}

void fs_lr_stats(fs_layer_reader *lr, fs_prefetch_stats *st)
{
    fs_prefetch_get_stats(lr->pf, st);
}
