/* main.c: forge-stream's command dispatcher. */
#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "src/cli/cli.h"

static const char usage[] =
    "usage: forge-stream <command> [options]      (forge-stream <command> --help)\n"
    "\n"
    "commands:\n"
    "  layer      quantize one linear layer given its weight and Hessian (or inputs)\n"
    "  inspect    list a checkpoint's tensors and quantized linears; --verify checksums\n"
    "  quantize   quantize a whole checkpoint: GPTQ through calibration, or RTN\n"
    "  eval       streaming perplexity of a checkpoint: original, forge, gptq or\n"
    "             compressed-tensors\n"
    "  plan       per-layer memory, I/O and time of a quantize run, without running it\n"
    "  tokenize   text or JSON lines to .u32 ids with the model's tokenizer.json\n"
    "\n"
    "  --resume --work DIR   continue an interrupted quantize run (its journal is in DIR)\n";

int main(int argc, char **argv)
{
    /* The big buffers (Hessians, weight copies: hundreds of MB per linear) come
     * back every linear.  glibc serves those over 32 MB from fresh mmaps that
     * the kernel zero-fills each time: 13% of a Llama-3-8B-shaped layer's run
     * was clear_page.  Kept in the heap and never trimmed, they are reused: that
     * layer runs 7% faster at the same peak RSS (make bench, section 5 and 3). */
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, -1);
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? FS_EXIT_USAGE : FS_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        /* the second line is what the test suites ask (tests/check_cli.c): a
         * test process must not touch CUDA itself (Check forks it) */
        printf("forge-stream %s\n", FS_VERSION);
        char cu[256];
        fs_backend_cuda_summary(cu, sizeof cu);
        printf("%s\n", cu);
        return FS_EXIT_OK;
    }
    if (strcmp(argv[1], "layer") == 0) return cmd_layer(argc - 1, argv + 1);
    if (strcmp(argv[1], "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(argv[1], "quantize") == 0) return cmd_quantize(argc - 1, argv + 1);
    if (strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(argv[1], "plan") == 0) return cmd_plan(argc - 1, argv + 1);
    if (strcmp(argv[1], "tokenize") == 0) return cmd_tokenize(argc - 1, argv + 1);
    if (strcmp(argv[1], "--resume") == 0) return cmd_quantize(argc, argv);   /* quantize --resume ... */
    fprintf(stderr, "forge-stream: error: unknown command '%s'\n%s", argv[1], usage);
    return FS_EXIT_USAGE;
}
