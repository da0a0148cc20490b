/* cmd_serve.c - `layerkv serve`: coordinator + one worker thread in one
 * process (inproc://). See cmd/coord_main.c. */
#include "cmd/commands.h"
#include "cmd/coord_main.h"

int lkv_cmd_serve(int argc, char **argv)
{
    return lkv_coord_main(argc, argv, true);
}
