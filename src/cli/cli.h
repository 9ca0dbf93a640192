/* cli.h: what the command-line front end shares between commands: strict
 * number parsing that quotes the bad value, the quantization flags, exit
 * codes. */
#ifndef FS_CLI_H
#define FS_CLI_H

#include "src/backend/backend.h"

#define FS_EXIT_OK 0
#define FS_EXIT_RUNTIME 1
#define FS_EXIT_USAGE 2

/* The exit code of a command that ended with st (specifications.md §14):
 * 0 for FS_OK; 2 for bad usage or bad input (FS_ERR_USAGE, FS_ERR_FORMAT,
 * FS_ERR_CORRUPT: a checksum that does not match, FS_ERR_NUMERIC: a NaN/Inf
 * in the input, FS_ERR_NODEV: --backend cuda without a device); 1 for the
 * machine (FS_ERR_IO, FS_ERR_NOMEM, FS_ERR_NOSPACE, FS_ERR_CUDA, and
 * anything else).  Cannot fail. */
int fs_exit_code(fs_status st);

/* Each parses the whole string or records FS_ERR_USAGE naming flag and value. */
fs_status fs_arg_i64(fs_ctx *ctx, const char *flag, const char *s, int64_t lo, int64_t hi,
                     int64_t *out);
fs_status fs_arg_f64(fs_ctx *ctx, const char *flag, const char *s, double *out);
/* A byte size: a positive number with an optional K, M, G or T (powers of
 * 1000) and an optional B: "80G", "512M", "5e9". */
fs_status fs_arg_size(fs_ctx *ctx, const char *flag, const char *s, uint64_t *out);

/* If argv[*i] is a quantization flag, consumes it (and its value) into q,
 * advances *i and returns FS_OK with *taken = 1; *taken = 0 if it is not one.
 * Errors: FS_ERR_USAGE (missing or bad value). */
fs_status fs_arg_quant(fs_ctx *ctx, int argc, char **argv, int *i, fs_quant_opts *q, int *taken);
/* --backend auto|cpu|cuda */
fs_status fs_arg_backend(fs_ctx *ctx, const char *s, fs_backend_kind *out);
/* The text of the quantization flags for --help. */
extern const char fs_quant_flags_help[];

int cmd_layer(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);

/* The documents of text (a text file, or JSON lines with field) tokenized
 * with model's tokenizer.json (cmd-tokenize.c), logged.  Errors: as
 * fs_tok_load and fs_tok_documents. */
struct fs_tokens;
fs_status fs_cmd_tokenize_file(fs_ctx *ctx, const char *model, const char *text, const char *field, struct fs_tokens *tk);

#endif
