/* hessian_internal.h - the Hessian-vector products and eigenvalue algorithms of hessian.c, shared
 * with input_hessian.c, whose variable is the image instead of the weights (internal).
 *
 * A product is r->product's where it is set (input_hessian.c's exact one), else a central difference
 * of the gradient along a unit direction:
 *     H v = (g(theta + h v) - g(theta - h v)) / 2h,   h = o->step,
 * with g taken by r->gradient_at; vectors live on the host, dot products are summed in double. */
#ifndef BIOFLEX_HESSIAN_INTERNAL_H
#define BIOFLEX_HESSIAN_INTERNAL_H

#include "bioflex/analysis.h"

typedef struct hessian_run hessian_run;
struct hessian_run {
    bf_model *m;
    bf_loader *loader;
    float label_smoothing;
    const bf_hessian_options *o;
    size_t n;                  /* the variable's floats: parameters, or one image */
    uint64_t step;             /* the dropout draws of every pass */
    float *theta, *point, *g_plus, *g_minus; /* host */
    float *sum;                /* backend: the gradient's output */
    void *context;             /* what gradient_at needs besides */
    int products;              /* Hessian-vector products taken */
    double loss;
    int samples;
    /* g (host) = the gradient at theta + c v; sets loss and samples (the loss summed over them) */
    bf_status (*gradient_at)(hessian_run *r, const float *v, double c, float *g);
    /* hv = H v (nullable: the central difference of gradient_at) */
    bf_status (*product)(hessian_run *r, const float *v, float *hv);
};

double bf_hessian_dot(const float *a, const float *b, size_t n);

/* hv = H v for a unit v. */
bf_status bf_hessian_product(hessian_run *r, const float *v, float *hv);

/* PyHessian's power iteration with deflation: eigenvalue k (of o->top_n) from a Gaussian start
 * (seed derived from o->seed and k) orthogonal to the vectors found, v <- H v / |H v| until the
 * Rayleigh quotient changes by less than o->tolerance (never, for 0) or o->max_iterations. */
bf_status bf_hessian_top_eigenvalues(hessian_run *r, float **vectors, float *hv, double *eigenvalues, int *iterations);

/* The eigenvalues of the symmetric n x n matrix a (row-major, destroyed) into values, and the first
 * component of each one's unit eigenvector into first, by cyclic Jacobi rotations. */
void bf_symmetric_eigen(double *a, int n, double *values, double *first);

#endif
