// How the experts of one PMoL layer are laid out. Experts are numbered group-major:
// group 0's experts first, then group 1's, ...; router slots are the experts in that
// order followed by the empty experts:
//   slot s in [0, num_experts)                 expert s, of group group_of(s)
//   slot s in [num_experts, num_slots)         an empty expert (zero output)
// The stacked LoRA matrices follow the expert order with `rank` rows (A) or columns
// (B) per expert: expert e owns A rows / B columns [e*rank, (e+1)*rank).
#ifndef PMOL_ADAPTERS_EXPERT_LAYOUT_H_
#define PMOL_ADAPTERS_EXPERT_LAYOUT_H_

#include <cstdint>
#include <vector>

namespace pmol {

struct ExpertLayout {
  std::vector<int32_t> experts_per_group;  // one entry per preference group
  int32_t num_empty = 0;
  int32_t rank = 0;

  int32_t num_groups() const { return static_cast<int32_t>(experts_per_group.size()); }
  int32_t num_experts() const {
    int32_t n = 0;
    for (int32_t e : experts_per_group) n += e;
    return n;
  }
  int32_t num_slots() const { return num_experts() + num_empty; }
  // First expert (slot) of group k.
  int32_t first_expert(int32_t k) const {
    int32_t n = 0;
    for (int32_t j = 0; j < k; ++j) n += experts_per_group[j];
    return n;
  }
  // Group of expert slot s, or -1 for an empty slot.
  int32_t group_of(int32_t s) const {
    for (int32_t k = 0, first = 0; k < num_groups(); first += experts_per_group[k], ++k)
      if (s < first + experts_per_group[k]) return k;
    return -1;
  }
};

}  // namespace pmol

#endif  // PMOL_ADAPTERS_EXPERT_LAYOUT_H_
