// Text-format I/O of RunConfig (see run_config_io.h).
#include "proto/run_config_io.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <sys/stat.h>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/message.h"
#include "google/protobuf/text_format.h"

namespace pmol::config {
namespace {

namespace pb = google::protobuf;

// Collects the parser's errors as "source:line:column: message" (1-based).
class CollectingErrors : public pb::io::ErrorCollector {
 public:
  explicit CollectingErrors(std::string source) : source_(std::move(source)) {}

  void AddError(int line, pb::io::ColumnNumber column, const std::string& message) override {
    // At the end of the input the parser's "got: " names an empty token.
    const std::string kGot = "got: ";
    if (message.size() >= kGot.size() &&
        message.compare(message.size() - kGot.size(), kGot.size(), kGot) == 0) {
      errors_.push_back(Where(line, column) + message + "end of input");
      return;
    }
    errors_.push_back(Where(line, column) + message);
  }
  void AddWarning(int line, pb::io::ColumnNumber column, const std::string& message) override {
    warnings_.push_back(Where(line, column) + message);
  }

  const std::vector<std::string>& errors() const { return errors_; }

 private:
  std::string Where(int line, pb::io::ColumnNumber column) const {
    // The parser reports -1 for errors that have no position (e.g. at the end).
    if (line < 0) return source_ + ": ";
    return absl::StrCat(source_, ":", line + 1, ":", column + 1, ": ");
  }

  std::string source_;
  std::vector<std::string> errors_;
  std::vector<std::string> warnings_;
};

// Sets every unset singular field of `m` (recursively, creating sub-messages) to its
// default, so that the printer shows it; strings without a declared default stay unset.
void FillDefaults(pb::Message* m) {
  const pb::Descriptor* d = m->GetDescriptor();
  const pb::Reflection* r = m->GetReflection();
  for (int i = 0; i < d->field_count(); ++i) {
    const pb::FieldDescriptor* f = d->field(i);
    if (f->is_repeated()) {
      if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
        for (int j = 0; j < r->FieldSize(*m, f); ++j) {
          FillDefaults(r->MutableRepeatedMessage(m, f, j));
        }
      }
      continue;
    }
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      FillDefaults(r->MutableMessage(m, f));
      continue;
    }
    if (r->HasField(*m, f)) continue;
    // A string with no declared default (a path, a name) stays unset: "" means "none".
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING && !f->has_default_value()) {
      continue;
    }
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT32: r->SetInt32(m, f, f->default_value_int32()); break;
      case pb::FieldDescriptor::CPPTYPE_INT64: r->SetInt64(m, f, f->default_value_int64()); break;
      case pb::FieldDescriptor::CPPTYPE_UINT32: r->SetUInt32(m, f, f->default_value_uint32()); break;
      case pb::FieldDescriptor::CPPTYPE_UINT64: r->SetUInt64(m, f, f->default_value_uint64()); break;
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: r->SetDouble(m, f, f->default_value_double()); break;
      case pb::FieldDescriptor::CPPTYPE_FLOAT: r->SetFloat(m, f, f->default_value_float()); break;
      case pb::FieldDescriptor::CPPTYPE_BOOL: r->SetBool(m, f, f->default_value_bool()); break;
      case pb::FieldDescriptor::CPPTYPE_ENUM: r->SetEnum(m, f, f->default_value_enum()); break;
      case pb::FieldDescriptor::CPPTYPE_STRING: r->SetString(m, f, f->default_value_string()); break;
      case pb::FieldDescriptor::CPPTYPE_MESSAGE: break;
    }
  }
}

std::string Print(const RunConfig& config) {
  pb::TextFormat::Printer printer;
  std::string out;
  printer.PrintToString(config, &out);
  return out;
}

}  // namespace

absl::StatusOr<RunConfig> ParseRunConfig(const std::string& text,
                                         const std::string& source_name) {
  CollectingErrors errors(source_name);
  pb::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  parser.AllowPartialMessage(false);
  RunConfig config;
  if (!parser.ParseFromString(text, &config)) {
    if (errors.errors().empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source_name, ": not a valid pmol.config.RunConfig text proto"));
    }
    return absl::InvalidArgumentError(absl::StrJoin(errors.errors(), "\n"));
  }
  return config;
}

absl::Status ApplyOverride(const std::string& assignment, RunConfig* config) {
  const std::string where = absl::StrCat("--set=", assignment);
  const size_t eq = assignment.find('=');
  if (eq == std::string::npos || eq == 0) {
    return absl::InvalidArgumentError(absl::StrCat(where, ": expected field.path=value"));
  }
  const std::string path = assignment.substr(0, eq);
  std::string value = assignment.substr(eq + 1);
  RunConfig updated = *config;
  pb::Message* message = &updated;
  std::vector<std::string> parts;
  for (size_t begin = 0;;) {
    const size_t dot = path.find('.', begin);
    parts.push_back(path.substr(begin, dot == std::string::npos ? std::string::npos : dot - begin));
    if (dot == std::string::npos) break;
    begin = dot + 1;
  }
  for (size_t i = 0; i < parts.size(); ++i) {
    const pb::Descriptor* d = message->GetDescriptor();
    const pb::FieldDescriptor* f = d->FindFieldByName(parts[i]);
    if (f == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", d->full_name(), " has no field '",
                                                     parts[i], "'"));
    }
    const bool last = i + 1 == parts.size();
    if (!last) {
      if (f->cpp_type() != pb::FieldDescriptor::CPPTYPE_MESSAGE || f->is_repeated()) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, ": '", parts[i], "' is ",
            f->is_repeated() ? "a repeated field (edit the config file to change it)"
                             : "not a message"));
      }
      message = message->GetReflection()->MutableMessage(message, f);
      continue;
    }
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_MESSAGE) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": '", parts[i], "' is a message; set one of its fields"));
    }
    if (f->cpp_type() == pb::FieldDescriptor::CPPTYPE_STRING &&
        (value.empty() || (value[0] != '"' && value[0] != '\'' && value[0] != '['))) {
      std::string quoted = "\"";
      for (char c : value) {
        if (c == '"' || c == '\\') quoted += '\\';
        quoted += c;
      }
      value = quoted + "\"";
    }
    if (f->is_repeated()) message->GetReflection()->ClearField(message, f);
    CollectingErrors errors(where);
    pb::TextFormat::Parser parser;
    parser.RecordErrorsTo(&errors);
    if (!parser.MergeFromString(absl::StrCat(f->name(), ": ", value), message)) {
      std::string detail = errors.errors().empty() ? "cannot parse the value" : errors.errors()[0];
      // The parser's position refers to the synthetic "field: value" line; drop it.
      const size_t cut = detail.find(": ", where.size() + 1);
      if (detail.rfind(where, 0) == 0 && cut != std::string::npos) detail = detail.substr(cut + 2);
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", detail));
    }
  }
  *config = std::move(updated);
  return absl::OkStatus();
}

absl::StatusOr<RunConfig> ReadRunConfig(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      return absl::NotFoundError(absl::StrCat("run config ", path, ": no such file"));
    }
    return absl::UnavailableError(absl::StrCat("run config ", path, ": ", std::strerror(err)));
  }
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        absl::StrCat("run config ", path, ": is a directory, not a text-format file"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::UnavailableError(
        absl::StrCat("run config ", path, ": cannot open: ", std::strerror(errno)));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) {
    return absl::UnavailableError(absl::StrCat("run config ", path, ": read error"));
  }
  return ParseRunConfig(text.str(), path);
}

std::string RunConfigToText(const RunConfig& config) { return Print(config); }

std::string EffectiveRunConfigToText(const RunConfig& config) {
  RunConfig filled = config;
  FillDefaults(&filled);
  return Print(filled);
}

}  // namespace pmol::config
