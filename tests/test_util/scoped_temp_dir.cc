#include "tests/test_util/scoped_temp_dir.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"

namespace vitserve {
namespace {

int RemoveEntry(const char* path, const struct stat*, int, struct FTW*) {
  ::remove(path);
  return 0;  // Best effort: keep going after an error.
}

}  // namespace

ScopedTempDir::ScopedTempDir(const std::string& prefix) {
  std::string base = ::testing::TempDir();
  if (!base.empty() && base.back() != '/') base += '/';
  std::string pattern = base + prefix + "XXXXXX";
  std::vector<char> buffer(pattern.begin(), pattern.end());
  buffer.push_back('\0');
  if (::mkdtemp(buffer.data()) == nullptr) {
    ADD_FAILURE() << "mkdtemp(" << pattern << "): " << std::strerror(errno);
    path_ = pattern;
    return;
  }
  path_ = buffer.data();
}

ScopedTempDir::~ScopedTempDir() {
  // Depth first (FTW_DEPTH) so directories are empty when removed; FTW_PHYS so a symlink a test
  // made is removed itself, never followed.
  ::nftw(path_.c_str(), RemoveEntry, /*nopenfd=*/16, FTW_DEPTH | FTW_PHYS);
}

}  // namespace vitserve
