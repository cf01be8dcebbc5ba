// Debian's Abseil is built with its own absl::string_view (not std::string_view);
// these helpers convert at the boundary so that pmol/data can use std::string_view.
#ifndef PMOL_DATA_ABSL_COMPAT_H_
#define PMOL_DATA_ABSL_COMPAT_H_

#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pmol::data {

inline absl::string_view AsAbsl(std::string_view s) { return absl::string_view(s.data(), s.size()); }
inline std::string StatusMessage(const absl::Status& status) { return std::string(status.message()); }

}  // namespace pmol::data

#endif  // PMOL_DATA_ABSL_COMPAT_H_
