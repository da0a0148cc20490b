/* parallel.c - --tp/--pp command-line glue; see parallel.h. Main thread. */
#define LKV_LOG_MODULE "parallel"

#include "worker/parallel.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

static lkv_comm_t *g_comm; /* finalised at exit */

static void par_atexit(void)
{
    fflush(stdout);
    lkv_comm_destroy(&g_comm);
}

void lkv_par_usage(FILE *out)
{
    fprintf(out,
        "parallelism (start the ranks with mpirun; docs/parallelism.md):\n"
        "  --tp N                tensor-parallel ranks per stage (default 1)\n"
        "  --pp N                pipeline stages (default 1)\n"
        "  --pp-layers A,B,...   layers per stage (default: even split)\n");
}

static int take_int(const char *cmd, const char *opt, const char *v, int *out)
{
    char *end;
    long  x;

    errno = 0;
    x     = v != NULL ? strtol(v, &end, 10) : 0;
    if (v == NULL || end == v || *end != '\0' || errno != 0 || x < 1 ||
        x > 1024) {
        fprintf(stderr, "layerkv %s: %s expects an integer 1..1024, got "
                "'%s'\n", cmd, opt, v != NULL ? v : "");
        return -1;
    }
    *out = (int)x;
    return 0;
}

int lkv_par_args(const char *cmd, int *argc, char **argv, bool one_instance,
                 lkv_par_t *par)
{
    int   out = 1;
    char *layers = NULL;

    memset(par, 0, sizeof(*par));
    par->tp = par->pp = 1;
    for (int i = 1; i < *argc; i++) {
        static const char *names[] = {"--tp", "--pp", "--pp-layers"};
        const char        *a       = argv[i];
        int                which   = -1;
        const char        *val     = NULL;

        if (strcmp(a, "--") == 0) {
            /* stop: copy the rest unchanged */
            while (i < *argc) {
                argv[out++] = argv[i++];
            }
            break;
        }
        for (int k = 0; k < 3; k++) {
            size_t n = strlen(names[k]);
            if (strncmp(a, names[k], n) == 0 &&
                (a[n] == '\0' || a[n] == '=')) {
                which = k;
                if (a[n] == '=') {
                    val = a + n + 1;
                } else if (i + 1 < *argc) {
                    val = argv[++i];
                }
                break;
            }
        }
        if (which < 0) {
            argv[out++] = argv[i];
            continue;
        }
        if (val == NULL) {
            fprintf(stderr, "layerkv %s: %s needs a value\n", cmd,
                    names[which]);
            return -1;
        }
        if (which == 0 && take_int(cmd, "--tp", val, &par->tp) != 0) {
            return -1;
        }
        if (which == 1 && take_int(cmd, "--pp", val, &par->pp) != 0) {
            return -1;
        }
        if (which == 2) {
            layers = (char *)val;
        }
    }
    *argc       = out;
    argv[out]   = NULL;
    if (layers != NULL) {
        if (lkv_shard_parse_layers(layers, par->stage_layers,
                                   LKV_SHARD_MAX_STAGES,
                                   &par->n_stage_layers) != LKV_OK) {
            return -1;
        }
        if (par->n_stage_layers != par->pp) {
            fprintf(stderr, "layerkv %s: --pp-layers gives %d stages but "
                    "--pp is %d\n", cmd, par->n_stage_layers, par->pp);
            return -1;
        }
    }
    if (par->tp * par->pp == 1 && !lkv_comm_launched()) {
        return 0; /* single process: no MPI at all */
    }
    if (lkv_comm_create(par->tp, par->pp, &par->comm) != LKV_OK) {
        fprintf(stderr, "layerkv %s: cannot start the ranks for --tp %d "
                "--pp %d (see the error above)\n", cmd, par->tp, par->pp);
        return -1;
    }
    g_comm = par->comm;
    atexit(par_atexit);
    int rank = lkv_comm_world_rank(par->comm);
    if (lkv_comm_world_size(par->comm) > 1) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "[rank %d] ", rank);
        lkv_log_set_prefix(prefix);
    }
    if (one_instance && lkv_comm_n_instances(par->comm) != 1) {
        fprintf(stderr, "layerkv %s: %d ranks started but --tp %d x --pp %d "
                "needs exactly %d (mpirun -np %d)\n", cmd,
                lkv_comm_world_size(par->comm), par->tp, par->pp,
                par->tp * par->pp, par->tp * par->pp);
        return -1;
    }
    if (rank != 0) {
        /* one rank writes the generated text */
        fflush(stdout);
        int fd = open("/dev/null", O_WRONLY);
        if (fd >= 0) {
            dup2(fd, STDOUT_FILENO);
            close(fd);
        }
    }
    return 0;
}

lkv_status_t lkv_par_model_create(const lkv_par_t *par, lkv_kern_backend_t *be,
                                  const lkv_model_file_t *mf,
                                  lkv_model_t **m_p)
{
    lkv_shard_t sh;

    if (par == NULL || par->comm == NULL) {
        return lkv_model_create(be, mf, m_p);
    }
    LKV_CHECK(lkv_shard_plan(lkv_model_file_config(mf), par->tp,
                             lkv_comm_tp_rank(par->comm), par->pp,
                             lkv_comm_pp_rank(par->comm),
                             par->n_stage_layers > 0 ? par->stage_layers
                                                     : NULL,
                             &sh));
    LKV_CHECK(lkv_comm_attach_backend(par->comm, be));
    LKV_LOG_INFO("rank %d: layers %d..%d, query heads %d..%d, kv heads "
                 "%d..%d, mlp columns %d..%d",
                 lkv_comm_world_rank(par->comm), sh.layer0, sh.layer1 - 1,
                 sh.q_head0, sh.q_head0 + sh.n_q_heads - 1, sh.kv_head0,
                 sh.kv_head0 + sh.n_kv_heads - 1, sh.ff0,
                 sh.ff0 + sh.n_ff - 1);
    return lkv_model_create_sharded(be, mf, &sh, par->comm, m_p);
}

bool lkv_par_is_leader(const lkv_par_t *par)
{
    return par == NULL || par->comm == NULL || lkv_comm_is_leader(par->comm);
}

lkv_status_t lkv_par_follow(const lkv_par_t *par, lkv_step_exec_t *x)
{
    lkv_step_plan_t   plan;
    lkv_step_result_t res;
    bool              stop = false;
    lkv_status_t      st;

    if (par == NULL || par->comm == NULL || x == NULL) {
        return LKV_ERR_INVALID;
    }
    for (;;) {
        st = lkv_comm_plan_recv(par->comm, &plan, &stop);
        if (st != LKV_OK || stop) {
            break;
        }
        /* a failing step is reported by the leader, which saw it too */
        (void)lkv_step_exec_run(x, &plan, &res);
    }
    lkv_status_t st2 = lkv_step_exec_sync(x);
    return st != LKV_OK ? st : st2;
}

lkv_status_t lkv_par_generate(const lkv_par_t *par, lkv_engine_t *e,
                              const lkv_engine_request_t *reqs, int n_reqs,
                              lkv_engine_token_fn fn, void *ctx)
{
    lkv_status_t st;

    if (lkv_par_is_leader(par)) {
        st = lkv_engine_generate(e, reqs, n_reqs, fn, ctx);
        if (par != NULL && par->comm != NULL) {
            lkv_status_t st2 = lkv_comm_plan_stop(par->comm);
            if (st == LKV_OK) {
                st = st2;
            }
        }
        return st;
    }
    return lkv_par_follow(par, lkv_engine_step_exec(e));
}

/* ---- serving: the leader's setup reaches the followers ---- */

typedef struct {
    int32_t ok; /* 1: setup follows, 0: the leader gave up */
    char    model[4096];
    char    tokenizer[4096];
} wsetup_model_t;

typedef struct {
    int32_t                ok;
    lkv_step_exec_config_t xc; /* remote cleared */
} wsetup_exec_t;

static bool has_peers(const lkv_par_t *par)
{
    return par != NULL && par->comm != NULL && par->tp * par->pp > 1;
}

lkv_status_t lkv_par_lead_model(lkv_par_t *par, const char *model_path,
                                const char *tokenizer_path)
{
    static wsetup_model_t w; /* 8 KiB: not on the stack */

    if (!has_peers(par) || par->setup_sent != 0) {
        return LKV_OK;
    }
    memset(&w, 0, sizeof(w));
    if (model_path == NULL || strlen(model_path) >= sizeof(w.model) ||
        (tokenizer_path != NULL &&
         strlen(tokenizer_path) >= sizeof(w.tokenizer))) {
        LKV_LOG_ERROR("model or tokenizer path too long for the peers");
        return LKV_ERR_INVALID;
    }
    w.ok = 1;
    snprintf(w.model, sizeof(w.model), "%s", model_path);
    if (tokenizer_path != NULL) {
        snprintf(w.tokenizer, sizeof(w.tokenizer), "%s", tokenizer_path);
    }
    par->setup_sent = 1;
    return lkv_comm_inst_bcast(par->comm, &w, sizeof(w));
}

lkv_status_t lkv_par_lead_exec(lkv_par_t *par,
                               const lkv_step_exec_config_t *xc)
{
    wsetup_exec_t w;

    if (!has_peers(par) || par->setup_sent != 1) {
        return LKV_OK;
    }
    memset(&w, 0, sizeof(w));
    w.ok        = 1;
    w.xc        = *xc;
    w.xc.remote = NULL;
    par->setup_sent = 2;
    return lkv_comm_inst_bcast(par->comm, &w, sizeof(w));
}

void lkv_par_lead_done(lkv_par_t *par)
{
    if (!has_peers(par)) {
        return;
    }
    if (par->setup_sent == 0) {
        static wsetup_model_t w;
        memset(&w, 0, sizeof(w));
        (void)lkv_comm_inst_bcast(par->comm, &w, sizeof(w));
        par->setup_sent = 3;
        return;
    }
    if (par->setup_sent == 1) {
        wsetup_exec_t w;
        memset(&w, 0, sizeof(w));
        (void)lkv_comm_inst_bcast(par->comm, &w, sizeof(w));
        par->setup_sent = 3;
        return;
    }
    if (par->setup_sent == 2) {
        (void)lkv_comm_plan_stop(par->comm);
        par->setup_sent = 3;
    }
}

lkv_status_t lkv_par_worker_follow(lkv_par_t *par, const char *backend,
                                   int threads, double link_gbps)
{
    static wsetup_model_t wm;
    wsetup_exec_t         wx;
    lkv_kern_backend_t   *be    = NULL;
    lkv_model_file_t     *mf    = NULL;
    lkv_model_t          *model = NULL;
    lkv_step_exec_t      *x     = NULL;
    lkv_status_t          st, st_local = LKV_OK;

    if (!has_peers(par) || lkv_comm_is_leader(par->comm)) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(lkv_comm_inst_bcast(par->comm, &wm, sizeof(wm)));
    if (!wm.ok) {
        LKV_LOG_INFO("the instance leader gave up before its setup");
        return LKV_ERR_CANCELLED;
    }
    lkv_kern_config_t kc = lkv_kern_config_default();
    kc.n_threads         = threads;
    kc.link_gbps         = link_gbps;
    st_local             = lkv_kern_backend_open(backend, &kc, &be);
    if (st_local == LKV_OK) {
        st_local = lkv_model_file_open(wm.model,
                                       wm.tokenizer[0] ? wm.tokenizer : NULL,
                                       &mf);
    }
    if (st_local == LKV_OK) {
        st_local = lkv_par_model_create(par, be, mf, &model);
    }
    if (st_local != LKV_OK) {
        /* the leader fails the same way (same files); still wait for it */
        LKV_LOG_ERROR("follower setup failed (model '%s', backend %s): %s",
                      wm.model, backend, lkv_status_str(st_local));
    }
    st = lkv_comm_inst_bcast(par->comm, &wx, sizeof(wx));
    if (st == LKV_OK && wx.ok && st_local == LKV_OK) {
        wx.xc.remote = NULL;
        st_local     = lkv_step_exec_create(model, &wx.xc, &x);
        if (st_local != LKV_OK) {
            LKV_LOG_ERROR("follower cannot create its step executor: %s",
                          lkv_status_str(st_local));
        }
    }
    if (st == LKV_OK && wx.ok) {
        if (x != NULL) {
            st = lkv_par_follow(par, x);
        } else {
            /* cannot compute: exit with the error; mpirun then ends the
             * job, so the leader does not wait on this rank forever */
            st = st_local;
        }
    } else if (st == LKV_OK) {
        st = LKV_ERR_CANCELLED;
    }
    lkv_step_exec_destroy(&x);
    lkv_model_destroy(&model);
    lkv_model_file_close(&mf);
    lkv_kern_backend_close(&be);
    return st;
}
