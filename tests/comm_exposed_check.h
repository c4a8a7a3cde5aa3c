/* comm_exposed_check.h - what the data-parallel tests (mpi_data_parallel.c, test_nccl_dp_gpu.c)
 * check of metrics.jsonl's comm_exposed_ms. */
#ifndef BIOFLEX_TEST_COMM_EXPOSED_CHECK_H
#define BIOFLEX_TEST_COMM_EXPOSED_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* The number after "key": in a metrics.jsonl line, or -1 when the line has no such key. */
static double json_number(const char *line, const char *key) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\":", key);
    const char *p = strstr(line, quoted);
    return p ? strtod(p + strlen(quoted), NULL) : -1;
}

/* comm_exposed_ms in the train lines of the metrics file at path: in every line, above `floor`
 * (0 may be excluded or not: a blocking MPI all-reduce always takes time, a GPU's buckets may be
 * hidden) and below ms_per_step, when want is set; in none otherwise. Returns the train lines. */
static int check_comm_exposed_file(const char *path, int want, int zero_allowed) {
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot read %s", path);
    if (!f) return 0;
    char line[4096];
    int lines = 0;
    while (fgets(line, sizeof line, f)) {
        if (!strstr(line, "\"type\":\"train\"")) continue;
        lines++;
        double comm = json_number(line, "comm_exposed_ms"), step = json_number(line, "ms_per_step");
        if (want)
            CHECK((zero_allowed ? comm >= 0 : comm > 0) && comm < step,
                  "%s: comm_exposed_ms %g should be in %s0, ms_per_step = %g)", path, comm, zero_allowed ? "[" : "(",
                  step);
        else
            CHECK(comm < 0, "%s: a run that is not data-parallel logs comm_exposed_ms (%g)", path, comm);
    }
    fclose(f);
    CHECK(lines > 0, "%s: no train lines", path);
    return lines;
}

#endif
