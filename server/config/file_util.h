// Small POSIX file-system helpers for the config layer and the model manager.
//
// Why not std::filesystem: the LibTorch wheel's libtorch.so exports its own copies of the
// std::filesystem free functions (status, remove_all, create_directories, ...), and the dynamic
// linker binds every binary that links torch to them; those copies crash here (a call through a
// null pointer in remove_all). So nothing that links LibTorch may call them. These helpers use
// stat/opendir/mkdir/nftw directly.
//
// Thread-safety: all functions are safe to call concurrently. Errors: the predicates answer
// false on any error; MakeDirectories returns INTERNAL with errno's text.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace vitserve {

bool IsDirectory(const std::string& path);
bool IsRegularFile(const std::string& path);  // Follows symlinks.
// `dir`/`name`; `name` when it is absolute or `dir` is empty.
std::string JoinPath(const std::string& dir, const std::string& name);
// The last component of `path`, ignoring trailing slashes ("a/b/" -> "b").
std::string Basename(const std::string& path);
// Names (not paths) of the subdirectories of `dir`, unsorted; empty on error.
std::vector<std::string> ListSubdirectories(const std::string& dir);
// mkdir -p.
absl::Status MakeDirectories(const std::string& path);
// rm -rf; best effort (tests' temporary directories).
void RemoveTree(const std::string& path);

}  // namespace vitserve
