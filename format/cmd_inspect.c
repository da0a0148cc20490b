/* cmd_inspect.c - `layerkv inspect`: print a model file's format, config,
 * tokenizer summary and tensor list (shape, dtype).
 *
 * Threading: single-threaded command.
 */
#include <getopt.h>
#include <stdio.h>

#include "cmd/commands.h"
#include "format/model_file.h"
#include "format/tokenizer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: layerkv inspect [--model PATH] [--tokenizer PATH] "
            "[--no-tensors]\n\n"
            "Print the model's config and tensor list.\n\n"
            "  -m, --model PATH      model (.gguf, llama2.c .bin, HF dir, "
            "dummy:CONFIG or dummy:NAME;\n"
            "                        default " LKV_DEFAULT_MODEL ")\n"
            "  -t, --tokenizer PATH  tokenizer.bin (llama2.c) or "
            "tokenizer.json\n"
            "      --no-tensors      config only\n"
            "  -h, --help            this help\n");
}

static void print_tensor(const char *name, int layer, const lkv_tensor_t *t)
{
    if (t->data == NULL) {
        return;
    }
    char full[64];
    if (layer >= 0) {
        snprintf(full, sizeof(full), "layers.%d.%s", layer, name);
    } else {
        snprintf(full, sizeof(full), "%s", name);
    }
    printf("  %-24s %-5s (%lld, %lld)\n", full, lkv_dtype_name(t->dtype),
           (long long)t->rows, (long long)t->cols);
}

int lkv_cmd_inspect(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"tokenizer", required_argument, NULL, 't'},
        {"no-tensors", no_argument, NULL, 'n'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model = LKV_DEFAULT_MODEL, *tok_path = NULL;
    int         tensors = 1, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': tok_path = optarg; break;
        case 'n': tensors = 0; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    lkv_model_file_t *mf = NULL;
    lkv_status_t      st = lkv_model_file_open(model, tok_path, &mf);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv inspect: cannot open %s: %s\n", model,
                lkv_status_str(st));
        return 1;
    }
    const lkv_model_config_t *cf = lkv_model_file_config(mf);
    printf("format        %s\n", lkv_model_file_format(mf));
    printf("arch          %s\n", cf->arch);
    printf("dim           %d\n", cf->dim);
    printf("hidden_dim    %d\n", cf->hidden_dim);
    printf("n_layers      %d\n", cf->n_layers);
    printf("n_heads       %d\n", cf->n_heads);
    printf("n_kv_heads    %d\n", cf->n_kv_heads);
    printf("head_dim      %d\n", cf->head_dim);
    printf("vocab_size    %d\n", cf->vocab_size);
    printf("max_seq_len   %d\n", cf->max_seq_len);
    printf("norm_eps      %g\n", (double)cf->norm_eps);
    printf("rope_theta    %g\n", (double)cf->rope_theta);
    printf("rope_dim      %d\n", cf->rope_dim);
    printf("rope_style    %s\n",
           cf->rope_style == LKV_ROPE_HALVES ? "halves" : "adjacent");
    if (cf->rope_scaling.type == LKV_ROPE_SCALING_LLAMA3) {
        printf("rope_scaling  llama3 factor %g low %g high %g orig %d\n",
               (double)cf->rope_scaling.factor,
               (double)cf->rope_scaling.low_freq_factor,
               (double)cf->rope_scaling.high_freq_factor,
               cf->rope_scaling.original_max_pos);
    }
    printf("qkv_bias      %s\n", cf->qkv_bias ? "yes" : "no");
    printf("tied_output   %s\n", cf->tied_output ? "yes" : "no");
    printf("bos_id        %d\n", cf->bos_id);
    printf("eos_id        %d\n", cf->eos_id);
    printf("stop_ids     ");
    for (int i = 0; i < cf->n_stop_ids; i++) {
        printf(" %d", cf->stop_ids[i]);
    }
    printf("\nweight_bytes  %zu\n", lkv_model_file_weight_bytes(mf));
    const lkv_tokenizer_t *tok = lkv_model_file_tokenizer(mf);
    if (tok != NULL) {
        printf("tokenizer     %s, %d tokens, add_bos %s\n",
               lkv_tok_kind(tok) == LKV_TOK_SPM ? "spm" : "bpe",
               lkv_tok_vocab_size(tok),
               lkv_tok_add_bos_default(tok) ? "yes" : "no");
    } else {
        printf("tokenizer     none\n");
    }
    if (tensors) {
        const lkv_model_tensors_t *t = lkv_model_file_tensors(mf);
        printf("tensors:\n");
        print_tensor("tok_embd", -1, &t->tok_embd);
        print_tensor("out_norm", -1, &t->out_norm);
        if (!cf->tied_output) {
            print_tensor("output", -1, &t->output);
        }
        print_tensor("rope_freqs", -1, &t->rope_freqs);
        for (int l = 0; l < cf->n_layers; l++) {
            const lkv_layer_tensors_t *L = &t->layers[l];
            print_tensor("attn_norm", l, &L->attn_norm);
            print_tensor("wq", l, &L->wq);
            print_tensor("wk", l, &L->wk);
            print_tensor("wv", l, &L->wv);
            print_tensor("bq", l, &L->bq);
            print_tensor("bk", l, &L->bk);
            print_tensor("bv", l, &L->bv);
            print_tensor("wo", l, &L->wo);
            print_tensor("ffn_norm", l, &L->ffn_norm);
            print_tensor("w_gate", l, &L->w_gate);
            print_tensor("w_up", l, &L->w_up);
            print_tensor("w_down", l, &L->w_down);
        }
    }
    lkv_model_file_close(&mf);
    return 0;
}
