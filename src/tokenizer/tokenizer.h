/* tokenizer.h: a Hugging Face tokenizer.json read and run natively, so that
 * calibration and evaluation can start from text (specifications.md §16):
 * byte-level BPE (GPT-2 style: Llama-3, Qwen2/3, DeepSeek-V3, SmolLM2) and
 * SentencePiece-style BPE (Metaspace, byte fallback: Llama-2, Mistral,
 * stories260K), their normalizers and pre-tokenizers, added tokens, and the
 * BOS/EOS rule of tokenizer_config.json.  The ids are those of the
 * `tokenizers` library's encode(text, add_special_tokens=False); the BOS and
 * EOS of a document are added by fs_tok_documents. */
#ifndef FS_TOKENIZER_H
#define FS_TOKENIZER_H

#include "src/core/core.h"
#include "src/formats/tokens.h"

typedef struct fs_tok fs_tok;

typedef struct fs_ids {
    uint32_t *v;
    size_t n, cap;
} fs_ids;

#define FS_TOK_MAX_JSON (1ull << 30)   /* bytes of a tokenizer.json accepted: 1 GiB */

/* Reads DIR/tokenizer.json (and DIR/tokenizer_config.json, when present,
 * for BOS/EOS).  Errors: FS_ERR_USAGE naming the file when it is missing or
 * unreadable (a folder with only a tiktoken or SentencePiece model file is
 * named as such); FS_ERR_FORMAT naming the file and the part that is
 * malformed or not supported (a model type other than BPE, such as WordPiece
 * or Unigram, a normalizer or pre-tokenizer type it does not implement, a
 * regex PCRE2 refuses); FS_ERR_NOMEM. */
fs_status fs_tok_load(fs_ctx *ctx, const char *dir, fs_tok **out);
void fs_tok_free(fs_tok *t);

/* Appends the ids of text[0..n) (any bytes; invalid UTF-8 is first replaced
 * with U+FFFD, one per maximal invalid subpart, as Python's
 * bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy do).
 * Errors: FS_ERR_NOMEM, FS_ERR_FORMAT (a regex match error). */
fs_status fs_tok_encode(fs_ctx *ctx, fs_tok *t, const char *text, size_t n, fs_ids *out);

/* The token ids' text (tests and debugging): byte-level tokens mapped back
 * to bytes, "\u2581" to a space and <0xNN> to its byte for SentencePiece
 * ones.  A new NUL-terminated buffer in *out (its length in *len).
 * Errors: FS_ERR_FORMAT (an id outside the vocabulary), FS_ERR_NOMEM. */
fs_status fs_tok_decode(fs_ctx *ctx, const fs_tok *t, const uint32_t *ids, size_t n, char **out, size_t *len);

/* BOS / EOS: add_bos is tokenizer_config.json's add_bos_token, or (when it
 * does not say) whether the post-processor's template starts with a special
 * token; bos / eos are the ids of its bos_token / eos_token, -1 when none. */
int fs_tok_add_bos(const fs_tok *t);
int64_t fs_tok_bos(const fs_tok *t);
int64_t fs_tok_eos(const fs_tok *t);
/* One more than the largest id the tokenizer can produce. */
int64_t fs_tok_vocab_size(const fs_tok *t);
/* "byte-level BPE" or "SentencePiece BPE" (for logs). */
const char *fs_tok_kind(const fs_tok *t);

/* The documents of a text file tokenized into one sequence (spec §16.3):
 * jsonl_field NULL: the whole file is one document; otherwise every
 * non-blank line is a JSON object whose string field jsonl_field is one
 * document.  Each document is prefixed with BOS when add_bos; an EOS (when
 * the tokenizer has one) stands between two documents.  Errors: as
 * fs_tokens_load (a file that is missing, not regular, over
 * FS_TOKENS_MAX_FILE bytes), FS_ERR_FORMAT naming the file and line (not a
 * JSON object, field missing or not a string, no tokens at all). */
fs_status fs_tok_documents(fs_ctx *ctx, fs_tok *t, const char *path, const char *jsonl_field, fs_tokens *out);

void fs_ids_free(fs_ids *ids);

#endif
