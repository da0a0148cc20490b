/* main.c - the layerkv binary: dispatch to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cmd/commands.h"
#include "common/log.h"

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *summary;
} subcommand_t;

static const subcommand_t *subcommands(int *n_p)
{
    static subcommand_t table[] = {
        {"run", NULL, "generate text offline on one process (or under mpirun)"},
        {"serve", NULL, "coordinator + worker in one process (embedded default)"},
        {"coordinator", NULL, "the coordinator alone; workers connect to it"},
        {"worker", NULL, "one worker rank that executes step plans"},
        {"generate", NULL, "stream a completion from a running server"},
        {"stats", NULL, "print a running server's state"},
        {"bench", NULL, "load generator against a running server"},
        {"sim", NULL, "simulate the scheduler at 7B-70B scale on a cost model"},
        {"kvnode", NULL, "remote host-memory KV tier over UCX"},
        {"tokenize", NULL, "print the token ids of a text for a model"},
        {"inspect", NULL, "print a model file's config and tensors"},
        {"bench-overlap", NULL, "measure KV offload / compute overlap (link emulation)"},
    };
    int n = (int)(sizeof(table) / sizeof(table[0]));

    table[0].fn  = lkv_cmd_run;
    table[1].fn  = lkv_cmd_serve;
    table[2].fn  = lkv_cmd_coordinator;
    table[3].fn  = lkv_cmd_worker;
    table[4].fn  = lkv_cmd_generate;
    table[5].fn  = lkv_cmd_stats;
    table[6].fn  = lkv_cmd_bench;
    table[7].fn  = lkv_cmd_sim;
    table[8].fn  = lkv_cmd_kvnode;
    table[9].fn  = lkv_cmd_tokenize;
    table[10].fn = lkv_cmd_inspect;
    table[11].fn = lkv_cmd_bench_overlap;
    *n_p         = n;
    return table;
}

static void usage(FILE *out)
{
    int                 n;
    const subcommand_t *t = subcommands(&n);

    fprintf(out, "usage: layerkv COMMAND [OPTIONS]   (layerkv COMMAND --help)\n\n"
                 "layer-wise KV cache LLM serving runtime\n\ncommands:\n");
    for (int i = 0; i < n; i++) {
        if (t[i].fn != NULL) {
            fprintf(out, "  %-14s %s\n", t[i].name, t[i].summary);
        }
    }
    fprintf(out, "\nenvironment: LKV_LOG_LEVEL=error|warn|info|debug|trace\n");
}

int main(int argc, char **argv)
{
    int                 n;
    const subcommand_t *t = subcommands(&n);

    lkv_log_init_from_env();
    if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("layerkv 0.1.0\n");
        return 0;
    }
    for (int i = 0; i < n; i++) {
        if (t[i].fn != NULL && strcmp(argv[1], t[i].name) == 0) {
            return t[i].fn(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "layerkv: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
