"""The CUDA sources of kernels/cuda (one .cu each), for its BUILD file and for the CPU
emulation of the CUDA backend in tests/cuda."""

CUDA_KERNELS = [
    "attention_backward",
    "attention_forward",
    "attention_mma",
    "column_blocks",
    "column_sum",
    "convert",
    "dropout",
    "elementwise",
    "embedding",
    "experts",
    "gemm",
    "log_softmax",
    "optimizer",
    "rms_norm",
    "rope",
    "router_losses",
    "router_topk",
    "row_softmax",
    "swiglu",
]
