/* coord_main.h - option parsing and main loop shared by `layerkv serve`
 * (coordinator + one embedded worker thread over inproc://) and `layerkv
 * coordinator` (workers are separate `layerkv worker` processes).
 * Threading: the calling thread runs the coordinator loop; serve adds one
 * worker thread. */
#ifndef LKV_CMD_COORD_MAIN_H
#define LKV_CMD_COORD_MAIN_H

#include <stdbool.h>

int lkv_coord_main(int argc, char **argv, bool embedded);

#endif /* LKV_CMD_COORD_MAIN_H */
