// Stand-in for the CUDA toolkit's <cuda_runtime_api.h> in the CPU emulation (simt_emulation.h).
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_CUDA_RUNTIME_API_H
#define PMOL_TESTS_CUDA_SIMT_EMULATION_CUDA_RUNTIME_API_H
#include "runtime_api_emulation.h"
#endif
