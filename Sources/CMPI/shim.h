#ifndef CMPI_SHIM_H
#define CMPI_SHIM_H
#include <mpi.h>
#include <stdint.h>

// Open MPI's handles are macros over the addresses of its global objects
// (`#define MPI_COMM_WORLD OMPI_PREDEFINED_GLOBAL(MPI_Comm, ompi_mpi_comm_world)`), which Swift
// cannot import; these return them.
static inline MPI_Comm CMPI_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype CMPI_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype CMPI_uint64(void) { return MPI_UINT64_T; }
static inline MPI_Op CMPI_sum(void) { return MPI_SUM; }
static inline void *CMPI_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Errhandler CMPI_errors_return(void) { return MPI_ERRORS_RETURN; }
#endif
