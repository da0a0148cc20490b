/* cpu_sample.c - token sampling on the CPU: greedy, temperature, top-k,
 * top-p, with a per-sequence splitmix64 random stream.
 *
 * The exact algorithm (other backends that want bit-equal tokens follow it):
 *  1. r = splitmix64(rng_state) (state += 0x9E3779B97F4A7C15, then the
 *     standard mix); the state advances exactly once per sampled token, also
 *     for greedy rows, so a sequence's draws never depend on how its earlier
 *     tokens were sampled or batched. A fresh sequence starts with
 *     rng_state = params.seed. u = (r >> 11) * 2^-53 in [0, 1).
 *  2. temperature <= 0 or top_k == 1: argmax, lowest id on ties.
 *  3. p_i = exp((logit_i - max) / temperature) (nan logits get 0).
 *  4. top_k > 0: keep the k best by (p desc, id asc).
 *  5. top_p < 1: sort by (p desc, id asc) and keep the shortest prefix whose
 *     mass reaches top_p * (mass of the candidates); at least one.
 *  6. walk the candidates in that order (vocabulary order when neither cut
 *     applies) and return the first whose running sum exceeds u * sum.
 *
 * Threading: one caller at a time (kernels.h); scratch lives in the impl.
 */
#define LKV_LOG_MODULE "kern.cpu"

#include <math.h>
#include <stdlib.h>

#include "common/log.h"
#include "kernels/cpu/cpu_impl.h"

typedef struct {
    float   p;
    int32_t id;
} cand_t;

static uint64_t splitmix64_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);

    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* argmax, lowest id on ties; nan never wins over a number */
static int argmax_row(const float *x, int n)
{
    int   best = 0;
    float bv   = x[0];

    for (int i = 1; i < n; i++) {
        if (x[i] > bv || (isnan(bv) && !isnan(x[i]))) {
            bv   = x[i];
            best = i;
        }
    }
    return best;
}

static int better(const cand_t *a, const cand_t *b)
{
    return a->p > b->p || (a->p == b->p && a->id < b->id);
}

static int cmp_cand(const void *a_, const void *b_)
{
    const cand_t *a = a_, *b = b_;

    if (better(a, b)) {
        return -1;
    }
    return better(b, a) ? 1 : 0;
}

/* move the k best of c[0..n) to the front, sorted; returns their count */
static int top_k_select(cand_t *c, int n, int k)
{
    int len = 0;

    if (k >= n || k > 64) {
        qsort(c, (size_t)n, sizeof(*c), cmp_cand);
        return k < n ? k : n;
    }
    for (int i = 0; i < n; i++) {
        cand_t x = c[i];
        int    j;

        if (len == k && !better(&x, &c[k - 1])) {
            continue;
        }
        j = len < k ? len++ : k - 1;
        while (j > 0 && better(&x, &c[j - 1])) {
            c[j] = c[j - 1];
            j--;
        }
        c[j] = x;
    }
    return len;
}

static lkv_status_t ensure_scratch(lkv_cpu_impl_t *impl, int vocab)
{
    cand_t *c;

    if (impl->sample_cap >= (size_t)vocab) {
        return LKV_OK;
    }
    c = malloc((size_t)vocab * sizeof(*c));
    if (c == NULL) {
        return LKV_ERR_NOMEM;
    }
    free(impl->sample_cand);
    impl->sample_cand = c;
    impl->sample_cap  = (size_t)vocab;
    return LKV_OK;
}

static int32_t draw(const cand_t *c, int n, double u)
{
    double sum = 0.0, target, acc = 0.0;

    for (int i = 0; i < n; i++) {
        sum += c[i].p;
    }
    target = u * sum;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (acc > target) {
            return c[i].id;
        }
    }
    for (int i = n - 1; i > 0; i--) { /* rounding: last non-zero */
        if (c[i].p > 0.0f) {
            return c[i].id;
        }
    }
    return c[0].id;
}

static int32_t sample_row(lkv_cpu_impl_t *impl, const float *logits, int vocab,
                          const lkv_sample_params_t *sp, uint64_t *state)
{
    cand_t  *c = impl->sample_cand;
    uint64_t r = splitmix64_next(state);
    double   u = (double)(r >> 11) * (1.0 / 9007199254740992.0);
    float    inv_t, mx;
    int      n_cand = vocab;

    if (!(sp->temperature > 0.0f) || sp->top_k == 1) {
        return argmax_row(logits, vocab);
    }
    inv_t = 1.0f / sp->temperature;
    mx    = logits[argmax_row(logits, vocab)];
    for (int i = 0; i < vocab; i++) {
        float e = expf((logits[i] - mx) * inv_t);
        c[i].p  = e == e ? e : 0.0f; /* nan logits are never drawn */
        c[i].id = i;
    }
    if (sp->top_k > 0 && sp->top_k < vocab) {
        n_cand = top_k_select(c, vocab, sp->top_k);
    }
    if (sp->top_p < 1.0f) {
        double sum = 0.0, mass = 0.0, cut;
        int    keep = 0;

        if (n_cand == vocab) {
            qsort(c, (size_t)n_cand, sizeof(*c), cmp_cand);
        }
        for (int i = 0; i < n_cand; i++) {
            sum += c[i].p;
        }
        cut = (double)sp->top_p * sum;
        while (keep < n_cand) {
            mass += c[keep].p;
            keep++;
            if (mass >= cut) {
                break;
            }
        }
        n_cand = keep;
    }
    return draw(c, n_cand, u);
}

lkv_status_t lkv_cpu_sample(lkv_kern_backend_t *be, int32_t *tokens,
                            const float *logits, int n, int vocab,
                            const lkv_sample_params_t *params,
                            uint64_t                  *rng_state)
{
    lkv_cpu_impl_t *impl = lkv_cpu_impl(be);

    if (n == 0) {
        return LKV_OK;
    }
    if (impl == NULL || tokens == NULL || logits == NULL || params == NULL ||
        rng_state == NULL || n < 0 || vocab <= 0) {
        return LKV_ERR_INVALID;
    }
    for (int i = 0; i < n; i++) {
        if (isnan(params[i].temperature) || isnan(params[i].top_p)) {
            LKV_LOG_ERROR("sample: row %d has a nan temperature or top_p; "
                          "use temperature 0 for greedy",
                          i);
            return LKV_ERR_INVALID;
        }
    }
    LKV_CHECK(ensure_scratch(impl, vocab));
    for (int i = 0; i < n; i++) {
        tokens[i] = sample_row(impl, logits + (size_t)i * vocab, vocab,
                               &params[i], &rng_state[i]);
    }
    return LKV_OK;
}
