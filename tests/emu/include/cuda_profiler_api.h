/* The kernel emulator's stand-in: cudaProfilerStart/Stop are in emu_cuda.h. */
#include "../emu_cuda.h"
