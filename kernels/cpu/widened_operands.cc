// f32 working copies of bf16 operands; see widened_operands.h.
#include "kernels/cpu/widened_operands.h"

#include "kernels/check.h"
#include "kernels/cpu/elementwise.h"

namespace pmol::cpu {
namespace {

// Calls fn(offset, count) for each row's elements, or once when the rows are contiguous.
template <typename Fn>
void ForRows(int64_t rows, int64_t cols, int64_t ld, Fn fn) {
  if (ld == cols || rows == 1) {
    fn(int64_t{0}, rows * cols);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) fn(r * ld, cols);
}

}  // namespace

WidenedOperands::~WidenedOperands() {
  for (const Operand& o : operands_) backend_->Free(o.copy);
}

float* WidenedOperands::Widen(const void* bf16, int64_t rows, int64_t cols, int64_t ld, bool read,
                              void* write_back) {
  if (bf16 == nullptr) return nullptr;
  PMOL_CHECK(rows >= 0 && cols >= 0 && ld >= cols);
  const int64_t span = rows == 0 ? 0 : (rows - 1) * ld + cols;
  float* copy = static_cast<float*>(backend_->Allocate(static_cast<size_t>(span) * sizeof(float)));
  PMOL_CHECK(copy != nullptr && "out of host memory for an f32 working copy");
  operands_.push_back({copy, write_back, rows, cols, ld, {}});
  if (read) {
    const uint16_t* src = static_cast<const uint16_t*>(bf16);
    ForRows(rows, cols, ld, [&](int64_t offset, int64_t count) {
      Convert(DType::kBF16, src + offset, DType::kF32, copy + offset, count);
    });
  }
  return copy;
}

const float* WidenedOperands::In(const void* bf16, int64_t rows, int64_t cols, int64_t ld) {
  return Widen(bf16, rows, cols, ld, true, nullptr);
}
float* WidenedOperands::InOut(void* bf16, int64_t rows, int64_t cols, int64_t ld) {
  return Widen(bf16, rows, cols, ld, true, bf16);
}
float* WidenedOperands::Out(void* bf16, int64_t rows, int64_t cols, int64_t ld) {
  return Widen(bf16, rows, cols, ld, false, bf16);
}

float* WidenedOperands::InOutRows(void* bf16, const std::vector<int32_t>& rows, int64_t width) {
  const int64_t count = static_cast<int64_t>(rows.size());
  float* copy = static_cast<float*>(
      backend_->Allocate(static_cast<size_t>(count * width) * sizeof(float)));
  PMOL_CHECK(copy != nullptr && "out of host memory for an f32 working copy");
  operands_.push_back({copy, bf16, count, width, width, rows});
  const uint16_t* src = static_cast<const uint16_t*>(bf16);
  for (int64_t i = 0; i < count; ++i) {
    Convert(DType::kBF16, src + rows[i] * width, DType::kF32, copy + i * width, width);
  }
  return copy;
}

void WidenedOperands::WriteBack() {
  for (const Operand& o : operands_) {
    if (o.bf16 == nullptr) continue;
    uint16_t* dst = static_cast<uint16_t*>(o.bf16);
    if (!o.row_ids.empty()) {
      for (int64_t i = 0; i < o.rows; ++i) {
        Convert(DType::kF32, o.copy + i * o.cols, DType::kBF16, dst + o.row_ids[i] * o.cols, o.cols);
      }
      continue;
    }
    ForRows(o.rows, o.cols, o.ld, [&](int64_t offset, int64_t count) {
      Convert(DType::kF32, o.copy + offset, DType::kBF16, dst + offset, count);
    });
  }
}

}  // namespace pmol::cpu
