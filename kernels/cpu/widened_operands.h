// Mixed precision on the CPU (kernels/backend.h, dt = bf16): an operation runs its f32
// kernel on f32 working copies of its bf16 operands. A bf16 value widens to f32 exactly,
// the kernel computes in f32 as it does for dt = f32, and each bf16 output is rounded once
// (nearest even) when it is written back, so the result is the f32 result rounded:
//   In(p)    an f32 copy of a bf16 input;
//   InOut(p) an f32 copy of a bf16 operand the kernel updates (y += ..., beta * C);
//   Out(p)   f32 scratch for a bf16 output the kernel overwrites;
//   InOutRows(p, rows) an f32 copy of the named (distinct) rows of a bf16 matrix, packed
//            [count, width], written back to those rows only;
//   WriteBack() rounds every InOut, InOutRows and Out copy into its bf16 operand.
// A matrix operand is rows x cols with leading dimension ld (>= cols); only those
// elements are read and written back, never the gaps between rows. The copies come from
// the backend's allocator (so they count in its memory statistics) and are freed when
// the object is destroyed.
#ifndef PMOL_KERNELS_CPU_WIDENED_OPERANDS_H_
#define PMOL_KERNELS_CPU_WIDENED_OPERANDS_H_

#include <cstdint>
#include <vector>

#include "kernels/backend.h"

namespace pmol::cpu {

class WidenedOperands {
 public:
  explicit WidenedOperands(Backend* backend) : backend_(backend) {}
  ~WidenedOperands();
  WidenedOperands(const WidenedOperands&) = delete;
  WidenedOperands& operator=(const WidenedOperands&) = delete;

  // Vectors of n elements (null stays null).
  const float* In(const void* bf16, int64_t n) { return In(bf16, 1, n, n); }
  float* InOut(void* bf16, int64_t n) { return InOut(bf16, 1, n, n); }
  float* Out(void* bf16, int64_t n) { return Out(bf16, 1, n, n); }
  // Matrices of rows x cols, leading dimension ld; the copy keeps ld.
  const float* In(const void* bf16, int64_t rows, int64_t cols, int64_t ld);
  float* InOut(void* bf16, int64_t rows, int64_t cols, int64_t ld);
  float* Out(void* bf16, int64_t rows, int64_t cols, int64_t ld);
  float* InOutRows(void* bf16, const std::vector<int32_t>& rows, int64_t width);

  void WriteBack();

 private:
  struct Operand {
    float* copy;
    void* bf16;  // written back when not null
    int64_t rows, cols, ld;
    std::vector<int32_t> row_ids;  // InOutRows: copy row i is bf16 row row_ids[i]
  };
  float* Widen(const void* bf16, int64_t rows, int64_t cols, int64_t ld, bool read,
               void* write_back);

  Backend* backend_;
  std::vector<Operand> operands_;
};

}  // namespace pmol::cpu

#endif  // PMOL_KERNELS_CPU_WIDENED_OPERANDS_H_
