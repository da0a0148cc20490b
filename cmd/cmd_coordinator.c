/* cmd_coordinator.c - `layerkv coordinator`: the coordinator alone; workers
 * (`layerkv worker`) connect over tcp:// or ipc://. See cmd/coord_main.c. */
#include "cmd/commands.h"
#include "cmd/coord_main.h"

int lkv_cmd_coordinator(int argc, char **argv)
{
    return lkv_coord_main(argc, argv, false);
}
