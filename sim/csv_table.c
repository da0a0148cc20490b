/* csv_table.c - see csv_table.h. The whole file is read into one buffer;
 * separators are replaced by NULs and each cell is an offset into it. */
#define LKV_LOG_MODULE "sim"
#include "sim/csv_table.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

struct lkv_csv_table {
    char   *buf;
    int     n_cols;
    int64_t n_rows;
    char  **header; /* (n_cols) */
    char  **cells;  /* (n_rows * n_cols) */
};

static lkv_status_t read_file(const char *path, char **buf_p, size_t *len_p)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        LKV_LOG_ERROR(
            "cannot open %s (check --data-dir; tools/vidur_extract.py "
            "regenerates data/vidur)",
            path);
        return LKV_ERR_NOTFOUND;
    }
    size_t cap = 1 << 16, len = 0;
    char  *buf = malloc(cap + 1);
    if (buf == NULL) {
        fclose(f);
        return LKV_ERR_NOMEM;
    }
    for (;;) {
        size_t n = fread(buf + len, 1, cap - len, f);
        len += n;
        if (len < cap) {
            break;
        }
        char *nb = realloc(buf, cap * 2 + 1);
        if (nb == NULL) {
            free(buf);
            fclose(f);
            return LKV_ERR_NOMEM;
        }
        buf = nb;
        cap *= 2;
    }
    fclose(f);
    buf[len] = '\0';
    *buf_p   = buf;
    *len_p   = len;
    return LKV_OK;
}

/* Split one line (NUL-terminated) in place; returns the number of fields and
 * stores up to max pointers. */
static int split(char *line, char **out, int max)
{
    int n = 0;
    for (char *p = line;;) {
        char *c = strchr(p, ',');
        if (n < max) {
            out[n] = p;
        }
        n++;
        if (c == NULL) {
            break;
        }
        *c = '\0';
        p  = c + 1;
    }
    return n;
}

lkv_status_t lkv_csv_load(const char *path, lkv_csv_table_t **t_p)
{
    lkv_status_t     st;
    char            *buf = NULL;
    size_t           len = 0;
    lkv_csv_table_t *t   = NULL;

    if (path == NULL || t_p == NULL) {
        return LKV_ERR_INVALID;
    }
    LKV_CHECK(read_file(path, &buf, &len));
    /* count lines to size the cell array */
    int64_t n_lines = 0;
    for (size_t i = 0; i < len; i++) {
        n_lines += buf[i] == '\n';
    }
    n_lines += 1;
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        free(buf);
        return LKV_ERR_NOMEM;
    }
    t->buf    = buf;
    char *p   = buf;
    char *eol = strchr(p, '\n');
    if (eol != NULL) {
        *eol = '\0';
    }
    if (eol != NULL && eol > p && eol[-1] == '\r') {
        eol[-1] = '\0';
    }
    t->n_cols = 1;
    for (const char *q = p; *q != '\0'; q++) {
        t->n_cols += *q == ',';
    }
    t->header = calloc((size_t)t->n_cols, sizeof(char *));
    t->cells  = calloc((size_t)(n_lines * t->n_cols), sizeof(char *));
    if (t->header == NULL || t->cells == NULL) {
        st = LKV_ERR_NOMEM;
        goto err;
    }
    split(p, t->header, t->n_cols);
    int64_t line_no = 1;
    p               = eol != NULL ? eol + 1 : buf + len;
    while (p < buf + len) {
        line_no++;
        eol = strchr(p, '\n');
        if (eol != NULL) {
            *eol = '\0';
        }
        size_t l = strlen(p);
        if (l > 0 && p[l - 1] == '\r') {
            p[--l] = '\0';
        }
        if (l > 0) {
            int n = split(p, t->cells + t->n_rows * t->n_cols, t->n_cols);
            if (n != t->n_cols) {
                LKV_LOG_ERROR("%s line %lld: %d fields, header has %d", path,
                              (long long)line_no, n, t->n_cols);
                st = LKV_ERR_FORMAT;
                goto err;
            }
            t->n_rows++;
        }
        if (eol == NULL) {
            break;
        }
        p = eol + 1;
    }
    *t_p = t;
    return LKV_OK;
err:
    lkv_csv_destroy(&t);
    return st;
}

void lkv_csv_destroy(lkv_csv_table_t **t_p)
{
    if (t_p == NULL || *t_p == NULL) {
        return;
    }
    lkv_csv_table_t *t = *t_p;
    free(t->cells);
    free(t->header);
    free(t->buf);
    free(t);
    *t_p = NULL;
}

int64_t lkv_csv_rows(const lkv_csv_table_t *t)
{
    return t->n_rows;
}

int lkv_csv_col(const lkv_csv_table_t *t, const char *name)
{
    for (int i = 0; i < t->n_cols; i++) {
        if (strcmp(t->header[i], name) == 0) {
            return i;
        }
    }
    return -1;
}

const char *lkv_csv_str(const lkv_csv_table_t *t, int64_t row, int col)
{
    if (row < 0 || row >= t->n_rows || col < 0 || col >= t->n_cols) {
        return "";
    }
    return t->cells[row * t->n_cols + col];
}

double lkv_csv_num(const lkv_csv_table_t *t, int64_t row, int col)
{
    const char *s = lkv_csv_str(t, row, col);
    char       *end;
    if (*s == '\0') {
        return NAN;
    }
    double v = strtod(s, &end);
    if (end == s || *end != '\0') {
        return NAN;
    }
    return v;
}
