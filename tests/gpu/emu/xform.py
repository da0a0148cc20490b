# xform.py IN.cu OUT.cpp - rewrite a kernels/cuda/*.cu file for the host
# emulation (tests/gpu/emu): k<<<cfg>>>(args) -> emu_launch(cfg)(k, args),
# dynamic shared memory -> emu_dyn_smem(), NULL -> nullptr.
import re, sys
src = open(sys.argv[1]).read()
src = src.replace('extern __shared__ float smem[];', 'float *smem = emu_dyn_smem();')
src = re.sub(r'([A-Za-z_]\w*(?:<[^;()<>]*>)?)\s*<<<(.*?)>>>\s*\(', lambda m: 'emu_launch(%s)(%s, ' % (m.group(2), m.group(1)), src, flags=re.S)
src = re.sub(r'\bNULL\b', 'nullptr', src)
open(sys.argv[2], 'w').write('#include "emu.h"\n#include <climits>\n#include <cstdio>\n' + src)
