/* require.h - internal: the NULL-tensor check every op of the flex and neuron families starts with,
 * for the CPU (C) and CUDA (C++) files alike. REQUIRE(op, a, b, ...) returns BF_ERR_ARG, naming
 * op, when any of the pointers is NULL. */
#ifndef BIOFLEX_REQUIRE_H
#define BIOFLEX_REQUIRE_H

#include <stddef.h>

#include "bioflex/status.h"

#define REQUIRE(op, ...)                                                              \
    do {                                                                              \
        const void *req_[] = {__VA_ARGS__};                                           \
        for (size_t k_ = 0; k_ < sizeof req_ / sizeof req_[0]; k_++)                  \
            if (!req_[k_]) return bf_error(BF_ERR_ARG, "%s: NULL tensor pointer", op); \
    } while (0)

#endif
