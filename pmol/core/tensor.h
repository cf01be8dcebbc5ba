// Tensor: a typed, shaped view of memory that lives on one backend's device (host RAM
// for the CPU backend, GPU memory for CUDA). Storage is reference-counted and shared by
// views (Reshape, Rows); it is either allocated by the backend or wraps memory owned by
// something else (an mmap'ed safetensors file), which is how loading is zero-copy.
// Row-major, contiguous; the last dimension varies fastest.
#ifndef PMOL_CORE_TENSOR_H_
#define PMOL_CORE_TENSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/backend.h"
#include "kernels/check.h"
#include "kernels/dtype.h"

namespace pmol {

using Shape = std::vector<int64_t>;

int64_t NumElements(const Shape& shape);
std::string ShapeString(const Shape& shape);  // "[2, 3]"

class Tensor {
 public:
  Tensor() = default;

  // Uninitialised memory on `backend`. Aborts if the device is out of memory.
  static Tensor Empty(const Shape& shape, DType dtype, Backend* backend);
  static Tensor Zeros(const Shape& shape, DType dtype, Backend* backend);
  // Copies `bytes_of(shape, dtype)` bytes from host memory.
  static Tensor FromHost(const void* src, const Shape& shape, DType dtype, Backend* backend);
  // Views memory owned by `owner` (kept alive as long as any view exists); no copy.
  static Tensor Wrap(void* data, const Shape& shape, DType dtype, Backend* backend,
                     std::shared_ptr<const void> owner);

  bool defined() const { return storage_ != nullptr; }
  DType dtype() const { return dtype_; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const { return shape_[i < 0 ? i + rank() : i]; }
  int64_t numel() const { return NumElements(shape_); }
  size_t nbytes() const { return numel() * DTypeSize(dtype_); }
  Backend* backend() const { return storage_ ? storage_->backend : nullptr; }

  void* data() { return static_cast<char*>(storage_->ptr) + offset_; }
  const void* data() const { return static_cast<const char*>(storage_->ptr) + offset_; }
  template <typename T>
  T* data_as() {
    PMOL_CHECK(sizeof(T) == DTypeSize(dtype_));
    return static_cast<T*>(data());
  }
  template <typename T>
  const T* data_as() const {
    PMOL_CHECK(sizeof(T) == DTypeSize(dtype_));
    return static_cast<const T*>(data());
  }

  // Same storage, new shape with the same element count.
  Tensor Reshape(const Shape& shape) const;
  // Same storage, rows [begin, begin + count) of dimension 0.
  Tensor Rows(int64_t begin, int64_t count) const;

  // New tensors.
  Tensor Clone() const;
  Tensor ConvertTo(DType dtype) const;        // same backend
  Tensor CopyTo(Backend* backend) const;      // same dtype
  void CopyFrom(const Tensor& src);           // same shape and dtype; may cross devices
  void SetZero();

  // Host copies, for I/O and tests.
  void CopyToHost(void* dst) const;
  std::vector<double> ToDoubles() const;      // any floating dtype
  std::vector<float> ToFloats() const;

 private:
  struct Storage {
    Backend* backend = nullptr;
    void* ptr = nullptr;
    std::shared_ptr<const void> owner;  // set when the memory is not the backend's
    ~Storage();
  };

  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  DType dtype_ = DType::kF32;
};

}  // namespace pmol

#endif  // PMOL_CORE_TENSOR_H_
