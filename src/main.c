/* main.c: forge-stream's command dispatcher. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const char usage[] =
    "usage: forge-stream <command> [options]      (forge-stream <command> --help)\n"
    "\n"
    "commands:\n"
    "  layer      quantize one linear layer given its weight and Hessian (or inputs)\n"
    "  inspect    list a checkpoint's tensors and quantized linears; --verify checksums\n"
    "  quantize   quantize a whole checkpoint: GPTQ through calibration, or RTN\n"
    "  eval       streaming perplexity of an original, forge or gptq checkpoint\n"
    "  plan       per-layer memory, I/O and time of a quantize run, without running it\n"
    "\n"
    "  --resume --work DIR   continue an interrupted quantize run (its journal is in DIR)\n";

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fputs(usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? FS_EXIT_USAGE : FS_EXIT_OK;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("forge-stream %s\n", FS_VERSION);
        return FS_EXIT_OK;
    }
    if (strcmp(argv[1], "layer") == 0) return cmd_layer(argc - 1, argv + 1);
    if (strcmp(argv[1], "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(argv[1], "quantize") == 0) return cmd_quantize(argc - 1, argv + 1);
    if (strcmp(argv[1], "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(argv[1], "plan") == 0) return cmd_plan(argc - 1, argv + 1);
    if (strcmp(argv[1], "--resume") == 0) return cmd_quantize(argc, argv);   /* quantize --resume ... */
    fprintf(stderr, "forge-stream: error: unknown command '%s'\n%s", argv[1], usage);
    return FS_EXIT_USAGE;
}
