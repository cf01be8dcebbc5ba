// Stand-in for the CUDA toolkit's <cuda_bf16.h> in the CPU emulation test (simt_emulation.h).
#ifndef PMOL_TESTS_CUDA_SIMT_EMULATION_CUDA_BF16_H
#define PMOL_TESTS_CUDA_SIMT_EMULATION_CUDA_BF16_H
#include "simt_emulation.h"
#endif
