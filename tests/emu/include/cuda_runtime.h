/* The kernel emulator's stand-in for CUDA's runtime header (tests/emu/emu_cuda.h). */
#include "../emu_cuda.h"
