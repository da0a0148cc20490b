/* cuda_bf16.h - emulation shim: see emu.h */
#include "emu.h"
