/* cuda_fp16.h - emulation shim: see emu.h */
#include "emu.h"
