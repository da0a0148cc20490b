/* csv_table.h - a small reader for the comma-separated tables of data/vidur/
 * (header line, then rows; no quoting, no embedded commas). Used by the cost
 * model and the workload loader; files are read once at start-up.
 * Threading: a table is immutable after load and may be shared.
 */
#ifndef LKV_SIM_CSV_TABLE_H
#define LKV_SIM_CSV_TABLE_H

#include <stdint.h>

#include "common/status.h"

typedef struct lkv_csv_table lkv_csv_table_t;

/* Load `path`. Errors: LKV_ERR_NOTFOUND (cannot open; logged with the path),
 * LKV_ERR_FORMAT (a row with a different number of fields than the header;
 * logged with the line number), LKV_ERR_NOMEM. */
lkv_status_t lkv_csv_load(const char *path, lkv_csv_table_t **t_p);
void         lkv_csv_destroy(lkv_csv_table_t **t_p);

int64_t lkv_csv_rows(const lkv_csv_table_t *t);
/* Index of the column named `name`, or -1. */
int lkv_csv_col(const lkv_csv_table_t *t, const char *name);
/* Cell text (never NULL for valid indices). */
const char *lkv_csv_str(const lkv_csv_table_t *t, int64_t row, int col);
/* Cell as a number; NAN when empty or not a number. */
double lkv_csv_num(const lkv_csv_table_t *t, int64_t row, int col);

#endif /* LKV_SIM_CSV_TABLE_H */
