/* json_number.h - a number in the JSON files the analyses write by hand (routing, Hessians).
 *
 * JSON has no NaN or infinity, and printf writes them as "nan" and "inf", which no JSON reader
 * takes: one empty class in the routing's per-class means, or one diverged loss, made the whole
 * file unreadable (and a routing file useless to [model] static_routing). They are written as
 * null, what cJSON writes for them and Python's json reads as None. */
#ifndef BIOFLEX_JSON_NUMBER_H
#define BIOFLEX_JSON_NUMBER_H

#include <math.h>
#include <stdio.h>

/* Writes `before` (a separator, or "") then v with `digits` significant digits, or null. */
static inline void bf_json_number(FILE *f, const char *before, double v, int digits) {
    if (isfinite(v))
        fprintf(f, "%s%.*g", before, digits, v);
    else
        fprintf(f, "%snull", before);
}

#endif
