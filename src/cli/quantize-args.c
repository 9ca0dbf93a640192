/* quantize-args.c: quantize's flags: the usage text and the parser
 * (cmd-quantize.h), shared by the run (cmd-quantize.c) and its resume side
 * (cmd-resume.c, which parses the journal's flags with it). */
#include <stdint.h>
#include <string.h>

#include "src/cli/cli.h"
#include "src/cli/cmd-quantize.h"
#include "src/cli/serving.h"
#include "src/pipeline/plan.h"

const char quantize_usage[] =
    "usage: forge-stream quantize --model DIR --out DIR --calib TOKENS [options]\n"
    "       forge-stream quantize --model DIR --out DIR --calib-text TEXT [--jsonl-field F] [options]\n"
    "       forge-stream quantize --model DIR --out DIR --method rtn [options]\n"
    "\n"
    "  --model DIR          Hugging Face checkpoint folder (config.json + safetensors)\n"
    "  --out DIR            output folder (created; must be empty unless --overwrite)\n"
    "  --calib FILE         calibration tokens: .u32 ids or JSON lines (every family;\n"
    "                       DeepSeek MTP layers are copied unquantized)\n"
    "  --calib-text FILE    calibration text instead, tokenized with the model's\n"
    "                       tokenizer.json: the whole file one document, or JSON lines\n"
    "                       with --jsonl-field NAME (one document per line); BOS before\n"
    "                       each document as tokenizer_config.json says, EOS between two;\n"
    "                       windows are then drawn from the ids as with --calib\n"
    "  --jsonl-field NAME   the string field holding each line's text (--calib-text)\n"
    "  --samples N          calibration windows (default 128)\n"
    "  --seq-len L          tokens per window (default 2048, at most max_position_embeddings)\n"
    "  --calib-seed S       0 (default): the first N non-overlapping windows of the file;\n"
    "                       otherwise N of them chosen at random with seed S\n"
    "  --method gptq|rtn    GPTQ (default; needs --calib) or round to nearest; rtn with\n"
    "                       --calib runs the same pipeline (the baseline to compare with),\n"
    "                       without --calib it rounds every weight on its own\n"
    "  --act-dtype bf16|f32 activations kept between layers (default bf16)\n"
    "  --batch-tokens N     tokens of one forward batch at most (default 65536; whole\n"
    "                       windows, at least one); fewer when --host-mem needs it.  The\n"
    "                       batch used is recorded and a resume keeps it: Hessians sum\n"
    "                       batch by batch, so the bytes depend on it\n"
    "  --profile FILE       Chrome trace-event JSON of the run (Perfetto, chrome://tracing):\n"
    "                       one track per stage, spans per layer with bytes and FLOPs\n"
    "  --timings FILE       one JSON line per layer and stage: seconds, bytes, GB/s, GFLOP/s\n"
    "  --work DIR           the run's journal and activation cache (each layer's\n"
    "                       output, LZ4 chunks with checksums; only the latest kept);\n"
    "                       removed at the end; default OUT/.forge-work\n"
    "  --host-mem SIZE      host memory budget (default: physical memory less 10%%); a\n"
    "                       budget that cannot hold the largest layer is refused up front\n"
    "  --spill auto|always|never  keep the calibration activations in the work folder\n"
    "                       and stream them in window by window instead of holding a\n"
    "                       layer boundary in memory: auto (default) when --host-mem\n"
    "                       cannot hold it (the plan says so); never refuses such a\n"
    "                       budget; the output is the same either way\n"
    "  --format forge|gptq|compressed-tensors  output layout (default forge); gptq\n"
    "                       stores F16 scales and zero - 1, so its grids use F16 scales\n"
    "                       and zeros >= 1; compressed-tensors is pack-quantized (what\n"
    "                       llm-compressor writes; F32 scales, whole groups only)\n"
    "  --serving vllm|sglang|any  refuse (exit 2, before anything is written) options\n"
    "                       the engine would not load (the lines \"serving: ...\" that\n"
    "                       every run prints); vllm with --act-order uses static groups\n"
    "  --max-shard-size N   bytes per output shard, suffixes K M G (default 5G)\n"
    "  --overwrite          replace a checkpoint already in --out\n"
    "  --verify-model       (with --resume) read again every tensor the committed layers\n"
    "                       read and check it against the journal: needed when a model\n"
    "                       file was copied, moved to another disk or touched since the\n"
    "                       run started (its identity or times changed)\n"
    "  --allow-device-change  (with --resume) go on although this machine's kernels\n"
    "                       (OpenBLAS's for its CPU) differ from the run's: the output is\n"
    "                       then not byte-identical to an uninterrupted run\n"
    "  --backend B          auto (CUDA when a device is present), cpu, cpu-async or cuda\n"
    "  --threads N          CPU threads (OpenMP and BLAS; default: all cores).  The CPU\n"
    "                       bytes depend on it: it is recorded, and a resume uses the\n"
    "                       run's count\n"
    "  --quiet              no log lines\n"
    "\n"
    "Resume: every run keeps a journal in its work folder; killed at any\n"
    "moment (kill -9, power loss, a full disk), it goes on where it stopped with\n"
    "  forge-stream --resume --work DIR   (or: forge-stream quantize --resume --out OUT\n"
    "                       for the default OUT/.forge-work); every option comes from\n"
    "                       the journal (a conflicting flag is an error), committed\n"
    "                       files are checked, and the output is byte-identical to\n"
    "                       an uninterrupted run on the same backend\n"
    "\n"
    "MoE models (each expert's gate/up Hessian comes from the tokens routed to it,\n"
    "its down Hessian from its own intermediate activations; the counts per expert\n"
    "are logged per layer and stored in quantization_config):\n"
    "  --min-expert-tokens N  an expert routed fewer than N calibration tokens is\n"
    "                       under-calibrated (one with none always is); default 256:\n"
    "                       the default calibration (128 x 2048 tokens) gives every\n"
    "                       expert a fair share of >= 16k tokens even at top-8 of 128,\n"
    "                       and below 256 rows its Hessian has rank < 256 of thousands\n"
    "                       of columns: GPTQ would fit a handful of tokens\n"
    "  --experts-per-wave N experts whose Hessians one pass over the activations\n"
    "                       gathers (default: as many as the memory plan fits in\n"
    "                       --gpu-mem, else --host-mem); the output does not depend on it\n"
    "  --gpu-mem SIZE       the device's memory budget (the backend's buffers: the\n"
    "                       layer's weights, Hessians, the solver, a batch): the\n"
    "                       expert waves are sized to it as `plan --gpu-mem` shows,\n"
    "                       and a budget the largest layer cannot fit is refused\n"
    "                       before anything is written (cpu-async takes it as its\n"
    "                       device memory); the output does not depend on it\n"
    "  --quantize-experts-only  quantize the routed experts only: attention, dense\n"
    "                       MLPs and shared experts stay as the checkpoint has them\n"
    "                       (FP8 as BF16), and the forward runs them unquantized\n"
    "  --expert-policy P    what under-calibrated experts get, named in the log:\n"
    "                       all-tokens (default): Hessians from every token of the\n"
    "                         layer, as if the expert saw all (one more pass for it);\n"
    "                       rtn: gate, up and down rounded to nearest on the grid;\n"
    "                       shared: gate/up from the layer's full-input Hessian\n"
    "                         (no extra pass), down rounded to nearest\n"
    "\n";


fs_status quantize_parse(fs_ctx *ctx, int argc, char **argv, qargs *a, int *help)
{
    fs_quant_opts_default(&a->q);
    a->method = "gptq";
    a->samples = 128;
    a->seq_len = 2048;
    a->batch_tokens = FS_BATCH_TOKENS_DEFAULT;
    a->policy = FS_EXPERT_POLICY_DEFAULT;
    a->min_expert_tokens = FS_MIN_EXPERT_TOKENS_DEFAULT;
    for (int i = 1; i < argc; i++) {
        int taken = 0;
        fs_status rc = fs_arg_quant(ctx, argc, argv, &i, &a->q, &taken);
        if (rc != FS_OK) return rc;
        if (taken) continue;
        const char *f = argv[i];
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { *help = 1; return FS_OK; }
        if (!strcmp(f, "--quiet")) { ctx->quiet = 1; continue; }
        if (!strcmp(f, "--overwrite")) { a->overwrite = 1; continue; }
        if (!strcmp(f, "--quantize-experts-only")) { a->experts_only = 1; continue; }
        if (!strcmp(f, "--resume")) { a->resume = 1; continue; }
        if (!strcmp(f, "--verify-model")) { a->verify_model = 1; continue; }
        if (!strcmp(f, "--allow-device-change")) { a->allow_device_change = 1; continue; }
        if (i + 1 >= argc) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: missing value or unknown flag", f);
        const char *v = argv[++i];
        if (!strcmp(f, "--model")) a->model = v;
        else if (!strcmp(f, "--out")) a->out = v;
        else if (!strcmp(f, "--calib") || !strcmp(f, "--calib-text")) {
            if (a->calib) return fs_ctx_err(ctx, FS_ERR_USAGE, "%s: give one of --calib and --calib-text, once", f);
            a->calib = v;
            a->calib_text = !strcmp(f, "--calib-text");
        }
        else if (!strcmp(f, "--jsonl-field")) a->jsonl_field = v;
        else if (!strcmp(f, "--work")) a->work = v;
        else if (!strcmp(f, "--profile")) a->profile = v;
        else if (!strcmp(f, "--timings")) a->timings = v;
        else if (!strcmp(f, "--host-mem")) { if ((rc = fs_arg_size(ctx, f, v, &a->host_mem))) return rc; }
        else if (!strcmp(f, "--gpu-mem")) {
            if ((rc = fs_arg_size(ctx, f, v, &a->gpu_mem))) return rc;
            if (!a->gpu_mem) return fs_ctx_err(ctx, FS_ERR_USAGE, "--gpu-mem '%s': must be more than 0", v);
        }
        else if (!strcmp(f, "--samples")) { if ((rc = fs_arg_i64(ctx, f, v, 1, 1 << 24, &a->samples))) return rc; }
        else if (!strcmp(f, "--seq-len")) { if ((rc = fs_arg_i64(ctx, f, v, 2, 1 << 22, &a->seq_len))) return rc; }
        else if (!strcmp(f, "--threads")) { if ((rc = fs_arg_i64(ctx, f, v, 1, 4096, &a->threads))) return rc; }
        else if (!strcmp(f, "--batch-tokens")) {
            if ((rc = fs_arg_i64(ctx, f, v, 1, 1 << 30, &a->batch_tokens))) return rc;
        }
        else if (!strcmp(f, "--calib-seed")) {
            int64_t sd;
            if ((rc = fs_arg_i64(ctx, f, v, 0, INT64_MAX, &sd))) return rc;
            a->seed = (uint64_t)sd;
        } else if (!strcmp(f, "--act-dtype")) {
            if (!strcmp(v, "f32")) a->act_f32 = 1;
            else if (strcmp(v, "bf16")) return fs_ctx_err(ctx, FS_ERR_USAGE, "--act-dtype '%s': must be bf16 or f32", v);
        }
        else if (!strcmp(f, "--spill")) {
            if (!strcmp(v, "auto")) a->spill = 0;
            else if (!strcmp(v, "always")) a->spill = 1;
            else if (!strcmp(v, "never")) a->spill = -1;
            else return fs_ctx_err(ctx, FS_ERR_USAGE, "--spill '%s': must be auto, always or never", v);
        }
        else if (!strcmp(f, "--experts-per-wave")) {
            if ((rc = fs_arg_i64(ctx, f, v, 0, 1 << 20, &a->experts_per_wave))) return rc;
        } else if (!strcmp(f, "--min-expert-tokens")) {
            if ((rc = fs_arg_i64(ctx, f, v, 0, INT64_MAX, &a->min_expert_tokens))) return rc;
        } else if (!strcmp(f, "--expert-policy")) {
            if (fs_expert_policy_parse(v, &a->policy))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--expert-policy '%s': must be rtn, all-tokens or shared", v);
        }
        else if (!strcmp(f, "--backend")) {
            if ((rc = fs_arg_backend(ctx, v, &a->backend))) return rc;
            a->backend_name = v;
        }
        else if (!strcmp(f, "--method")) {
            if (strcmp(v, "rtn") && strcmp(v, "gptq"))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--method '%s': must be rtn or gptq", v);
            a->method = v;
        } else if (!strcmp(f, "--format")) {
            if (fs_format_parse(v, &a->fmt))
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--format '%s': must be forge, gptq or compressed-tensors", v);
        } else if (!strcmp(f, "--serving")) {
            if ((a->serving = fs_serving_parse(v)) < 0)
                return fs_ctx_err(ctx, FS_ERR_USAGE, "--serving '%s': must be vllm, sglang or any", v);
        } else if (!strcmp(f, "--max-shard-size")) {
            if ((rc = fs_arg_size(ctx, f, v, &a->max_shard)) != FS_OK) return rc;
        } else return fs_ctx_err(ctx, FS_ERR_USAGE, "unknown flag '%s' (see forge-stream quantize --help)", f);
    }
    a->q.rtn = strcmp(a->method, "rtn") == 0;
    a->q.gptq_v1 = a->fmt == FS_FMT_GPTQ;
    /* vLLM serves no dynamic act-order groups (§9.4): static ones instead.
     * Here, not later, so that a resume's parse of the same flags agrees. */
    if ((a->serving & FS_SERVE_VLLM) && a->q.act_order && !a->q.static_groups && !a->q.rtn && a->q.group_size != -1)
        a->q.static_groups = a->serving_static = 1;
    if (a->jsonl_field && !a->calib_text)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--jsonl-field is for --calib-text (a JSON-lines text file)");
    if (a->jsonl_field && !*a->jsonl_field) return fs_ctx_err(ctx, FS_ERR_USAGE, "--jsonl-field: empty name");
    if (a->resume) return fs_quant_opts_check(ctx, &a->q);   /* the rest comes from the journal */
    if (!a->model) return fs_ctx_err(ctx, FS_ERR_USAGE, "--model is required");
    if (!a->out) return fs_ctx_err(ctx, FS_ERR_USAGE, "--out is required");
    if (strcmp(a->method, "rtn") != 0 && !a->calib)
        return fs_ctx_err(ctx, FS_ERR_USAGE, "--method gptq needs --calib TOKENS or --calib-text TEXT (or use --method rtn)");
    a->q.rtn = strcmp(a->method, "rtn") == 0;
    a->q.gptq_v1 = a->fmt == FS_FMT_GPTQ;
    return fs_quant_opts_check(ctx, &a->q);
}

