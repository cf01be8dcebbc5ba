// The CUDA implementation of the compute interface (kernels/backend.h), built only with
// `--config=cuda`. One backend drives GPU 0 of the process's visible devices through a
// single non-blocking stream: every operation is enqueued on it in call order, and
// CopyToHost and Synchronize are the points where the host waits. Memory comes from the
// device's default stream-ordered pool (cudaMallocFromPoolAsync), so a buffer is valid for
// work enqueued on this backend's stream; other streams must synchronize first. The pool
// is the caching allocator: freed blocks stay in it (release threshold: never), and
// GetMemoryStats reports its counters (used, high-water mark, reserved).
//
// Compute types: f32 (the CUDA compute type) and f64 (used by tests to compare in double;
// attention then supports head_dim <= 128). dt = bf16 (mixed precision, kernels/backend.h)
// for every op but RowSoftmax, RouterTopK(Backward), AdamWStep and SumSquares: bf16
// storage, f32 math and side statistics, bf16 GEMMs through cuBLASLt with f32
// compute (gemm.h). Convert handles f32/f64/bf16/f16.
// Determinism: every kernel, including the reductions (RmsNorm dw, SumRows, embedding
// backward, attention dK/dV over the query heads of a group), sums in a fixed order
// without atomics, so a run repeats bit-for-bit on the same GPU and shapes. cuBLASLt GEMMs
// are deterministic on one stream, and each shape keeps the algorithm its first call chose.
#ifndef PMOL_KERNELS_CUDA_CUDA_BACKEND_H_
#define PMOL_KERNELS_CUDA_CUDA_BACKEND_H_

#include <memory>

#include "absl/status/statusor.h"
#include "kernels/backend.h"
#include "kernels/cuda/gemm_counters.h"

namespace pmol {

// Creates a backend for GPU 0. Fails with FailedPreconditionError, naming the CUDA
// runtime's own error text, when no usable GPU is present (no driver, driver too old,
// no device, or a GPU older than the sm_90 this build targets). Never aborts.
absl::StatusOr<std::unique_ptr<Backend>> CreateCudaBackend();

// The stream (a cudaStream_t) on which a CUDA backend enqueues all its work, for code that
// orders its own streams after it (dist/nccl_comm.h); null for any other backend.
void* CudaBackendStream(Backend* backend);

// What a CUDA backend's GEMMs did so far (kernels/cuda/gemm.h): tests check that they ran
// through cuBLASLt; InvalidArgumentError for any other backend.
absl::StatusOr<cuda::GemmCounters> CudaBackendGemmCounters(Backend* backend);

}  // namespace pmol

#endif  // PMOL_KERNELS_CUDA_CUDA_BACKEND_H_
