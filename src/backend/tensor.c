/* tensor.c: the 2-D views every op takes (backend.h) and the one check of a
 * view against its buffer that the dispatcher runs before anything is
 * queued (backend-impl.h).
 *
 * Invariants:
 *  1. Constructors never fail and never touch memory: a bad view is caught
 *     by fs_tensor_check when an op is given it.
 *  2. The check is exact for any int64 values: offsets and spans are
 *     computed with overflow checks, so a huge or negative field is refused,
 *     never wrapped into range.
 */
#include <stdio.h>
#include <string.h>

#include "src/backend/backend-impl.h"

fs_tensor fs_tensor_ld(fs_buf *buf, uint64_t off, fs_dtype dt, int64_t rows, int64_t cols, int64_t ld)
{
    fs_tensor t;
    t.buf = buf;
    t.off = off;
    t.dt = dt;
    t.rows = rows;
    t.cols = cols;
    t.ld = ld;
    return t;
}

fs_tensor fs_tensor_2d(fs_buf *buf, uint64_t off, fs_dtype dt, int64_t rows, int64_t cols)
{
    return fs_tensor_ld(buf, off, dt, rows, cols, cols);
}

fs_tensor fs_tensor_vec(fs_buf *buf, fs_dtype dt)
{
    size_t es = fs_dtype_size(dt);
    int64_t n = buf && es ? (int64_t)(buf->size / es) : 0;
    return fs_tensor_ld(buf, 0, dt, 1, n, n);
}

fs_tensor fs_tensor_rows(fs_tensor t, int64_t r0, int64_t n)
{
    t.off += (uint64_t)(r0 * t.ld) * (uint64_t)fs_dtype_size(t.dt);
    t.rows = n;
    return t;
}

fs_tensor fs_tensor_cols(fs_tensor t, int64_t c0, int64_t n)
{
    t.off += (uint64_t)c0 * (uint64_t)fs_dtype_size(t.dt);
    t.cols = n;
    return t;
}

fs_tensor fs_tensor_reshape(fs_tensor t, int64_t rows, int64_t cols)
{
    int64_t a, b;
    if (t.ld != t.cols || rows < 0 || cols < 0 || __builtin_mul_overflow(t.rows, t.cols, &a) ||
        __builtin_mul_overflow(rows, cols, &b) || a != b)
        t.dt = FS_DT_INVALID;
    t.rows = rows;
    t.cols = cols;
    t.ld = cols;
    return t;
}

fs_tensor fs_tensor_none(void)
{
    fs_tensor t;
    memset(&t, 0, sizeof t);
    return t;
}

/* Elements from (0, 0) to one past the last element, or -1 on overflow. */
static int64_t extent(const fs_tensor *t)
{
    int64_t e;
    if (t->rows == 0 || t->cols == 0) return 0;
    if (__builtin_mul_overflow(t->rows - 1, t->ld, &e) || __builtin_add_overflow(e, t->cols, &e)) return -1;
    return e;
}

uint64_t fs_tensor_span(const fs_tensor *t)
{
    int64_t e = extent(t);
    return e > 0 ? (uint64_t)e * fs_dtype_size(t->dt) : 0;
}

static void dtmask_names(uint32_t m, char *buf, size_t n)
{
    buf[0] = '\0';
    for (int dt = 1; dt < 32; dt++)
        if (m & (1u << dt)) {
            size_t k = strlen(buf);
            snprintf(buf + k, n - k, "%s%s", k ? " or " : "", fs_dtype_name((fs_dtype)dt));
        }
}

fs_status fs_tensor_check(fs_ctx *ctx, fs_backend *be, const char *op, const char *name,
                          const fs_tensor *t, uint32_t dtmask, int64_t rows, int64_t cols, int optional)
{
    if (!t->buf) {
        if (optional) return FS_OK;
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: operand %s is missing (no buffer)", op, name);
    }
    if (t->buf->be != be)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: operand %s: buffer '%s' belongs to another backend", op, name,
                          t->buf->what);
    if (t->dt <= FS_DT_INVALID || t->dt >= 32 || !(dtmask & (1u << t->dt))) {
        char want[160];
        dtmask_names(dtmask, want, sizeof want);
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: operand %s is %s, the op takes %s", op, name,
                          t->dt == FS_DT_INVALID ? "an invalid view" : fs_dtype_name(t->dt), want);
    }
    if (t->rows < 0 || t->cols < 0 || t->ld < t->cols)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: operand %s: view [%lld, %lld] with ld %lld (ld must be >= cols)",
                          op, name, (long long)t->rows, (long long)t->cols, (long long)t->ld);
    if ((rows >= 0 && t->rows != rows) || (cols >= 0 && t->cols != cols)) {
        char r[32], c[32];
        snprintf(r, sizeof r, rows >= 0 ? "%lld" : "any", (long long)rows);
        snprintf(c, sizeof c, cols >= 0 ? "%lld" : "any", (long long)cols);
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: operand %s is [%lld, %lld], the op needs [%s, %s]", op, name,
                          (long long)t->rows, (long long)t->cols, r, c);
    }
    const size_t es = fs_dtype_size(t->dt);
    if (t->off % es)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: operand %s: byte offset %llu is not a multiple of %zu (%s)", op,
                          name, (unsigned long long)t->off, es, fs_dtype_name(t->dt));
    int64_t e = extent(t);
    uint64_t bytes;
    if (e < 0 || __builtin_mul_overflow((uint64_t)e, (uint64_t)es, &bytes) ||
        __builtin_add_overflow(bytes, t->off, &bytes) || (e > 0 && bytes > t->buf->size) ||
        (e == 0 && t->off > t->buf->size))
        return fs_ctx_err(ctx, FS_ERR_USAGE,
                          "%s: operand %s: view [%lld, %lld] ld %lld of %s at byte %llu does not lie inside "
                          "buffer '%s' (%llu bytes)", op, name, (long long)t->rows, (long long)t->cols,
                          (long long)t->ld, fs_dtype_name(t->dt), (unsigned long long)t->off, t->buf->what,
                          (unsigned long long)t->buf->size);
    return FS_OK;
}

fs_status fs_tensor_check_dense(fs_ctx *ctx, fs_backend *be, const char *op, const char *name,
                                const fs_tensor *t, uint32_t dtmask, int64_t rows, int64_t cols, int optional)
{
    fs_status rc = fs_tensor_check(ctx, be, op, name, t, dtmask, rows, cols, optional);
    if (rc == FS_OK && t->buf && t->ld != t->cols && t->rows > 1)
        rc = fs_ctx_err(ctx, FS_ERR_USAGE, "%s: operand %s must be contiguous (ld %lld != cols %lld)", op, name,
                        (long long)t->ld, (long long)t->cols);
    return rc;
}
