/* cuda_runtime_api.h - emulation shim: see emu.h */
#include "emu.h"
