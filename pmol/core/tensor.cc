// Tensor storage management and copies; see tensor.h.
#include "pmol/core/tensor.h"

#include <cstdio>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace pmol {

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string ShapeString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

Tensor::Storage::~Storage() {
  if (owner == nullptr && ptr != nullptr) backend->Free(ptr);
}

Tensor Tensor::Empty(const Shape& shape, DType dtype, Backend* backend) {
  PMOL_CHECK(backend != nullptr);
  for (int64_t d : shape) PMOL_CHECK(d >= 0);
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->backend = backend;
  t.shape_ = shape;
  t.dtype_ = dtype;
  size_t bytes = t.nbytes();
  t.storage_->ptr = backend->Allocate(bytes);
  if (t.storage_->ptr == nullptr) {
    std::fprintf(stderr, "pmol: out of memory on %s allocating %zu bytes for a %s tensor\n",
                 backend->Name().c_str(), bytes, ShapeString(shape).c_str());
    std::abort();
  }
  return t;
}

Tensor Tensor::Zeros(const Shape& shape, DType dtype, Backend* backend) {
  Tensor t = Empty(shape, dtype, backend);
  t.SetZero();
  return t;
}

Tensor Tensor::FromHost(const void* src, const Shape& shape, DType dtype, Backend* backend) {
  Tensor t = Empty(shape, dtype, backend);
  backend->CopyFromHost(t.data(), src, t.nbytes());
  return t;
}

Tensor Tensor::Wrap(void* data, const Shape& shape, DType dtype, Backend* backend,
                    std::shared_ptr<const void> owner) {
  PMOL_CHECK(owner != nullptr);
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->backend = backend;
  t.storage_->ptr = data;
  t.storage_->owner = std::move(owner);
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::Reshape(const Shape& shape) const {
  PMOL_CHECK(NumElements(shape) == numel());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::Rows(int64_t begin, int64_t count) const {
  PMOL_CHECK(rank() >= 1 && begin >= 0 && count >= 0 && begin + count <= shape_[0]);
  Tensor t = *this;
  t.shape_[0] = count;
  t.offset_ += begin * (numel() / (shape_[0] == 0 ? 1 : shape_[0])) * DTypeSize(dtype_);
  return t;
}

Tensor Tensor::Clone() const {
  Tensor t = Empty(shape_, dtype_, backend());
  backend()->CopyOnDevice(t.data(), data(), nbytes());
  return t;
}

Tensor Tensor::ConvertTo(DType dtype) const {
  if (dtype == dtype_) return Clone();
  Tensor t = Empty(shape_, dtype, backend());
  backend()->Convert(dtype_, data(), dtype, t.data(), numel());
  return t;
}

Tensor Tensor::CopyTo(Backend* target) const {
  Tensor t = Empty(shape_, dtype_, target);
  t.CopyFrom(*this);
  return t;
}

void Tensor::CopyFrom(const Tensor& src) {
  PMOL_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_);
  if (src.backend() == backend()) {
    backend()->CopyOnDevice(data(), src.data(), nbytes());
  } else if (src.backend()->device() == DeviceType::kCpu) {
    backend()->CopyFromHost(data(), src.data(), nbytes());
  } else if (backend()->device() == DeviceType::kCpu) {
    src.backend()->CopyToHost(data(), src.data(), nbytes());
  } else {  // device to device across backends: stage through the host
    std::vector<char> host(nbytes());
    src.backend()->CopyToHost(host.data(), src.data(), nbytes());
    backend()->CopyFromHost(data(), host.data(), nbytes());
  }
}

void Tensor::SetZero() {
  if (dtype_ == DType::kF32 || dtype_ == DType::kF64) {  // the backends' compute types
    backend()->Fill(dtype_, data(), 0.0, numel());
  } else {
    std::vector<char> zeros(nbytes(), 0);
    backend()->CopyFromHost(data(), zeros.data(), nbytes());
  }
}

void Tensor::CopyToHost(void* dst) const { backend()->CopyToHost(dst, data(), nbytes()); }

std::vector<double> Tensor::ToDoubles() const {
  PMOL_CHECK(IsFloating(dtype_));
  std::vector<char> host(nbytes());
  CopyToHost(host.data());
  std::vector<double> out(numel());
  for (int64_t i = 0; i < numel(); ++i) {
    switch (dtype_) {
      case DType::kF32: out[i] = reinterpret_cast<const float*>(host.data())[i]; break;
      case DType::kF64: out[i] = reinterpret_cast<const double*>(host.data())[i]; break;
      case DType::kBF16: out[i] = Bf16ToF32(reinterpret_cast<const uint16_t*>(host.data())[i]); break;
      case DType::kF16: out[i] = F16ToF32(reinterpret_cast<const uint16_t*>(host.data())[i]); break;
      case DType::kI32: break;
    }
  }
  return out;
}

std::vector<float> Tensor::ToFloats() const {
  std::vector<double> d = ToDoubles();
  return std::vector<float>(d.begin(), d.end());
}

}  // namespace pmol
