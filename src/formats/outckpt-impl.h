/* outckpt-impl.h: the output writer's state, shared by outckpt.c (writing)
 * and outstate.c (its journal snapshot and resume).  Not for other files. */
#ifndef FS_OUTCKPT_IMPL_H
#define FS_OUTCKPT_IMPL_H

#include "src/formats/outckpt.h"
#include "src/formats/safetensors.h"

typedef struct pend {
    char *name;
    fs_dtype dt;
    int ndim;
    int64_t shape[FS_ST_MAX_DIMS];
    uint64_t off;            /* in the shard's staging file */
    uint64_t nbytes;
    uint64_t xxh;            /* XXH3-64 of the bytes */
    char *in_features;       /* forge: "<in>" for a .qweight, else NULL */
} pend;

struct fs_outckpt {
    char *dir;
    uint64_t max_shard;
    fs_format fmt;
    fs_quant_opts q;
    pend *p;
    int np, cap;
    uint64_t cur_bytes, total_bytes;
    int data_fd;             /* staging file of the shard being gathered, -1 if none: the
                                bytes go to disk as they come, so memory stays flat */
    int nshards;
    char **tname;            /* every tensor written, and its shard (1-based) */
    int *tshard;
    size_t nt, tcap;
    /* resume (fs_out_state): the staging file of a sealed shard is kept until
     * the journal has recorded the seal (fs_out_release), so that a crash in
     * between can go back to it; the size and XXH3-64 of each sealed shard
     * file, computed once. */
    int journaled;
    int kept_lo;             /* staging files of shards kept_lo .. nshards still on disk */
    int nsum;                /* shards 1..nsum have sums */
    uint64_t *shard_size, *shard_xxh;
};

void fs_out_partial_path(const fs_outckpt *o, int shard, char *buf, size_t n);   /* .shard-N.partial */
void fs_out_staging_path(const fs_outckpt *o, int shard, char *buf, size_t n);   /* .shard-N.data */
/* A file this writer produces (or its temporary or partial form). */
int fs_out_is_ckpt_file(const char *name);

#endif
