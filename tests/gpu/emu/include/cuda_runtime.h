/* cuda_runtime.h - emulation shim: see emu.h */
#include "emu.h"
