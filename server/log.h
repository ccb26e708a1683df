// Minimal server logging to stderr: "[vitserve] WARNING: message". Debian's abseil (20220623)
// has no absl/log, and the server logs rarely (start-up, model loads, shutdown), so one line
// per call, written with a single stream insertion, is all that is needed.
//
// Thread-safety: each call writes one complete line; lines from concurrent calls do not
// interleave within a line on glibc's std::cerr for typical lengths.
#pragma once

#include <iostream>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"

namespace vitserve {

enum class LogSeverity { kInfo, kWarning, kError };

inline void Log(LogSeverity severity, std::string_view message) {
  const char* label = severity == LogSeverity::kInfo      ? "INFO"
                      : severity == LogSeverity::kWarning ? "WARNING"
                                                          : "ERROR";
  // Debian's abseil has its own string_view type, so the message goes in as (data, size).
  const std::string line = absl::StrCat("[vitserve] ", label, ": ",
                                        absl::string_view(message.data(), message.size()), "\n");
  std::cerr << line << std::flush;
}

inline void LogInfo(std::string_view message) { Log(LogSeverity::kInfo, message); }
inline void LogWarning(std::string_view message) { Log(LogSeverity::kWarning, message); }
inline void LogError(std::string_view message) { Log(LogSeverity::kError, message); }

}  // namespace vitserve
