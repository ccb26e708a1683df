// Command-line spelling shared by vitserve's binaries. Users type dashed flag names
// (--grpc-port, --top-k), as the README and issues spell them; abseil's flag names are C++
// identifiers (grpc_port). These helpers accept both spellings and print help with dashes.
// Header-only; the caller links absl::flags_reflection.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/str_cat.h"

namespace vitserve {

// Rewrites "--top-k=3" to "--top_k=3": the name only, never the value, and nothing after a
// bare "--". argv[0] is kept as is.
inline std::vector<std::string> NormalizeFlagNames(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  for (size_t i = 1; i < args.size(); ++i) {
    std::string& arg = args[i];
    if (arg == "--") break;
    if (arg.size() < 3 || arg[0] != '-') continue;
    const size_t begin = arg[1] == '-' ? 2 : 1;
    const size_t end = std::min(arg.find('='), arg.size());
    std::replace(arg.begin() + begin, arg.begin() + end, '-', '_');
  }
  return args;
}

// argv-style pointers into `args` (which must outlive them), for absl::ParseCommandLine.
inline std::vector<char*> ArgvPointers(std::vector<std::string>& args) {
  std::vector<char*> pointers;
  pointers.reserve(args.size());
  for (std::string& arg : args) pointers.push_back(arg.data());
  return pointers;
}

// True when the command line asks for help (--help, -h, help as the first word).
inline bool WantsHelp(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") break;
    if (arg == "--help" || arg == "-h" || arg == "-help" || (i == 1 && arg == "help")) return true;
  }
  return false;
}

// "  --grpc-port=8001\n      help text\n" for each named flag, in the given order.
inline std::string DashedFlagHelp(const std::vector<std::string>& names) {
  std::string text;
  for (const std::string& name : names) {
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr) continue;
    std::string dashed = name;
    std::replace(dashed.begin(), dashed.end(), '_', '-');
    const std::string value = flag->DefaultValue();
    absl::StrAppend(&text, "  --", dashed, value.empty() ? "" : absl::StrCat("=", value),
                    "\n      ", flag->Help(), "\n");
  }
  return text;
}

}  // namespace vitserve
