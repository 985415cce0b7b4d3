// Returning freed heap memory to the system (glibc keeps large freed blocks mapped).
#include "CMaaSKernels.h"

#include <malloc.h>

void CMaaSKernels_release_free_memory(void) { malloc_trim(0); }
