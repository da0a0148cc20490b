/* cmd_tokenize.c - `layerkv tokenize`: print the token ids (and optionally
 * pieces) of a text for a model's tokenizer, or decode ids back to text.
 *
 * Threading: single-threaded command.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmd/commands.h"
#include "format/model_file.h"
#include "format/tokenizer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: layerkv tokenize [--model PATH] [--tokenizer PATH] "
            "--text TEXT [options]\n"
            "       layerkv tokenize [--model PATH] --decode \"ID ID ...\"\n\n"
            "Print the token ids of TEXT, one line, space separated.\n\n"
            "  -m, --model PATH      model (.gguf, llama2.c .bin, HF dir, "
            "dummy:CONFIG;\n"
            "                        default " LKV_DEFAULT_MODEL ")\n"
            "  -t, --tokenizer PATH  tokenizer.bin (llama2.c) or "
            "tokenizer.json\n"
            "      --text TEXT       text to encode\n"
            "      --no-bos          do not add BOS (default: the model's "
            "rule)\n"
            "      --bos             add BOS\n"
            "      --no-special      treat special-token text as plain text\n"
            "      --pieces          print id:piece pairs, one per line\n"
            "      --decode IDS      decode space-separated ids to text\n"
            "  -h, --help            this help\n");
}

int lkv_cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        {"model", required_argument, NULL, 'm'},
        {"tokenizer", required_argument, NULL, 't'},
        {"text", required_argument, NULL, 'x'},
        {"no-bos", no_argument, NULL, 'n'},
        {"bos", no_argument, NULL, 'b'},
        {"no-special", no_argument, NULL, 's'},
        {"pieces", no_argument, NULL, 'p'},
        {"decode", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *model = LKV_DEFAULT_MODEL, *tok_path = NULL, *text = NULL,
               *decode = NULL;
    int         bos = -1;
    bool        special = true, pieces = false;
    int         c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': tok_path = optarg; break;
        case 'x': text = optarg; break;
        case 'n': bos = 0; break;
        case 'b': bos = 1; break;
        case 's': special = false; break;
        case 'p': pieces = true; break;
        case 'd': decode = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if ((text == NULL && decode == NULL) || optind < argc) {
        usage(stderr);
        return 2;
    }
    lkv_model_file_t *mf = NULL;
    lkv_status_t      st = lkv_model_file_open(model, tok_path, &mf);
    if (st != LKV_OK) {
        fprintf(stderr, "layerkv tokenize: cannot open %s: %s\n", model,
                lkv_status_str(st));
        return 1;
    }
    const lkv_tokenizer_t *tok = lkv_model_file_tokenizer(mf);
    int                    rc  = 0;
    if (tok == NULL) {
        fprintf(stderr, "layerkv tokenize: %s has no tokenizer; pass "
                        "--tokenizer PATH\n", model);
        lkv_model_file_close(&mf);
        return 1;
    }
    if (decode != NULL) {
        size_t   cap = strlen(decode) / 2 + 2;
        int32_t *ids = malloc(cap * sizeof(*ids));
        int      n   = 0;
        char    *end;
        const char *p = decode;
        if (ids == NULL) {
            lkv_model_file_close(&mf);
            return 1;
        }
        for (;;) {
            long v = strtol(p, &end, 10);
            if (end == p) {
                break;
            }
            if ((size_t)n < cap) {
                ids[n++] = (int32_t)v;
            }
            p = end;
        }
        char *out = NULL;
        if (lkv_tok_decode(tok, ids, n, &out) == LKV_OK) {
            printf("%s\n", out);
            free(out);
        } else {
            rc = 1;
        }
        free(ids);
        lkv_model_file_close(&mf);
        return rc;
    }
    bool add_bos = bos < 0 ? lkv_tok_add_bos_default(tok) : bos == 1;
    int  n       = 0;
    st = lkv_tok_encode(tok, text, strlen(text), add_bos, special, NULL, 0, &n);
    int32_t *ids = st == LKV_OK ? malloc(((size_t)n + 1) * sizeof(*ids)) : NULL;
    if (ids == NULL ||
        lkv_tok_encode(tok, text, strlen(text), add_bos, special, ids, n, &n) !=
            LKV_OK) {
        fprintf(stderr, "layerkv tokenize: encoding failed\n");
        free(ids);
        lkv_model_file_close(&mf);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        if (pieces) {
            printf("%d\t%s\n", ids[i], lkv_tok_piece(tok, ids[i]));
        } else {
            printf(i ? " %d" : "%d", ids[i]);
        }
    }
    if (!pieces) {
        printf("\n");
    }
    free(ids);
    lkv_model_file_close(&mf);
    return rc;
}
