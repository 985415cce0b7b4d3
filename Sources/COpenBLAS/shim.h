#ifndef COPENBLAS_SHIM_H
#define COPENBLAS_SHIM_H
/* Debian's name for OpenBLAS's own cblas.h (cblas.h may be another BLAS's), on the default
 * multiarch include path. */
#include <cblas-openblas.h>

/* OpenBLAS is opened with dlopen when a kernel first needs it (BLAS.swift), not linked. These
 * are the types of the entry points it looks up, taken from cblas.h so they cannot drift. */
typedef __typeof__(cblas_sgemm) *maas_cblas_sgemm_fn;
typedef __typeof__(cblas_sgemv) *maas_cblas_sgemv_fn;
typedef __typeof__(openblas_set_num_threads) *maas_openblas_set_num_threads_fn;
#endif
