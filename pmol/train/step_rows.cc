// The rows of one preference step; see step_rows.h.
#include "pmol/train/step_rows.h"

#include <algorithm>

namespace pmol {
namespace {

// Real tokens of row i of a sequence batch, and where its reply starts.
struct Sequence {
  const int32_t* ids;
  const uint8_t* response;
  int64_t length = 0, prompt = 0;
  Sequence(const data::SequenceBatch& s, int64_t i)
      : ids(s.input_ids.data() + i * s.seq_len), response(s.response_mask.data() + i * s.seq_len) {
    const uint8_t* mask = s.attention_mask.data() + i * s.seq_len;
    for (int64_t t = 0; t < s.seq_len; ++t) length += mask[t];
    while (prompt < length && !response[prompt]) ++prompt;
  }
};

// Adds sequence q's scored tokens; index(u) is the place of its token u in [N].
template <typename IndexOf>
void AddScoredTokens(const Sequence& s, int32_t q, IndexOf index, StepRows* r) {
  for (int64_t u = 1; u < s.length; ++u) {
    if (!s.response[u]) continue;
    r->head_rows.push_back(static_cast<int32_t>(index(u - 1)));
    r->head_targets.push_back(s.ids[u]);
    r->head_sequence.push_back(q);
  }
}

StepRows MakePlainRows(const data::PreferenceBatch& b, bool with_rejected) {
  StepRows r;
  const int64_t pairs = b.num_pairs, T = b.chosen.seq_len;
  r.seq = T;
  r.count = r.sequences = with_rejected ? 2 * pairs : pairs;
  for (const data::SequenceBatch* s : {&b.chosen, &b.rejected}) {
    if (s == &b.rejected && !with_rejected) break;
    r.ids.insert(r.ids.end(), s->input_ids.begin(), s->input_ids.begin() + pairs * T);
    r.response.insert(r.response.end(), s->response_mask.begin(),
                      s->response_mask.begin() + pairs * T);
    r.weight.insert(r.weight.end(), s->attention_mask.begin(),
                    s->attention_mask.begin() + pairs * T);
    for (int64_t i = 0; i < pairs; ++i) r.preference.push_back(b.preference[i]);
  }
  for (int64_t q = 0; q < r.sequences; ++q) {
    const Sequence s(q < pairs ? b.chosen : b.rejected, q % pairs);
    const int64_t row0 = q * T;
    r.last.push_back(row0 + s.length - 1);
    AddScoredTokens(s, static_cast<int32_t>(q), [&](int64_t u) { return row0 + u; }, &r);
  }
  return r;
}

StepRows MakeSharedPromptRows(const data::PreferenceBatch& b) {
  StepRows r;
  r.shared = true;
  const int64_t pairs = b.num_pairs;
  r.count = pairs;
  r.sequences = 2 * pairs;
  std::vector<Sequence> chosen, rejected;
  std::vector<int64_t> prefix(pairs);
  for (int64_t i = 0; i < pairs; ++i) {
    chosen.emplace_back(b.chosen, i);
    rejected.emplace_back(b.rejected, i);
    const Sequence &c = chosen.back(), &x = rejected.back();
    const int64_t cap = std::min(c.prompt, x.prompt);
    int64_t p = 0;
    while (p < cap && c.ids[p] == x.ids[p]) ++p;
    prefix[i] = p;
    r.seq = std::max(r.seq, c.length + x.length - p);
  }
  const int64_t T = std::max<int64_t>(r.seq, 1), N = pairs * T;
  r.seq = T;
  r.ids.assign(N, 0);
  r.response.assign(N, 0);
  r.weight.assign(N, 0);
  r.layout.positions.assign(N, 0);
  r.layout.key_holes.assign(2 * N, 0);
  r.last.assign(r.sequences, 0);
  for (int64_t i = 0; i < pairs; ++i) {
    const Sequence &c = chosen[i], &x = rejected[i];
    const int64_t p = prefix[i], row0 = i * T, shift = c.length - p;  // rejected u -> u + shift
    r.preference.push_back(b.preference[i]);
    for (int64_t u = 0; u < c.length; ++u) {
      r.ids[row0 + u] = c.ids[u];
      r.response[row0 + u] = c.response[u];
      r.weight[row0 + u] = u < p ? 2 : 1;
      r.layout.positions[row0 + u] = static_cast<int32_t>(u);
    }
    for (int64_t u = p; u < x.length; ++u) {
      const int64_t n = row0 + u + shift;
      r.ids[n] = x.ids[u];
      r.response[n] = x.response[u];
      r.weight[n] = 1;
      r.layout.positions[n] = static_cast<int32_t>(u);
      r.layout.key_holes[2 * n] = static_cast<int32_t>(p);
      r.layout.key_holes[2 * n + 1] = static_cast<int32_t>(c.length);
    }
  }
  // Scored tokens and last tokens, sequence by sequence as in plain rows.
  for (int64_t q = 0; q < r.sequences; ++q) {
    const int64_t i = q % pairs, p = prefix[i], row0 = i * T, shift = chosen[i].length - p;
    const Sequence& s = q < pairs ? chosen[i] : rejected[i];
    auto index = [&](int64_t u) { return row0 + (q < pairs || u < p ? u : u + shift); };
    r.last[q] = index(s.length - 1);
    AddScoredTokens(s, static_cast<int32_t>(q), index, &r);
  }
  return r;
}

}  // namespace

StepRows MakeStepRows(const data::PreferenceBatch& b, bool with_rejected, bool share_prompt) {
  return with_rejected && share_prompt ? MakeSharedPromptRows(b) : MakePlainRows(b, with_rejected);
}

}  // namespace pmol
