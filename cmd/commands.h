/* commands.h - the layerkv subcommands. Each is implemented in the module
 * that owns it (worker/cmd_run.c, client/cmd_generate.c, ...) or in cmd/ when
 * it glues several modules (serve). Every subcommand parses its own options,
 * prints usage on --help (exit 0) and on bad options (exit 2, to stderr),
 * writes results to stdout and diagnostics to stderr, and returns the
 * process exit code. Declared weak so a binary built without a module still
 * links; main() lists only the subcommands that exist. */
#ifndef LKV_CMD_COMMANDS_H
#define LKV_CMD_COMMANDS_H

#define LKV_CMD_WEAK __attribute__((weak))

LKV_CMD_WEAK int lkv_cmd_run(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_serve(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_coordinator(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_worker(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_generate(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_stats(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_bench(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_sim(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_kvnode(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_tokenize(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_inspect(int argc, char **argv);
LKV_CMD_WEAK int lkv_cmd_bench_overlap(int argc, char **argv);

#endif /* LKV_CMD_COMMANDS_H */
