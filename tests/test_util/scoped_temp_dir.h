// ScopedTempDir: a fresh directory under ::testing::TempDir() that is removed, with everything
// in it, when the object goes out of scope. Tests write their checkpoints and config trees here
// so that nothing is left behind in /tmp (a 25 MB checkpoint per run adds up on a CI machine).
//
// POSIX only (mkdtemp, nftw): std::filesystem is off limits in binaries that link LibTorch
// (see server/config/file_util.h). Not thread-safe; one test owns one directory.
#pragma once

#include <string>

namespace vitserve {

class ScopedTempDir {
 public:
  // Creates <TempDir()>/<prefix>XXXXXX; reports a test failure when that is impossible.
  explicit ScopedTempDir(const std::string& prefix = "vitserve_test_");
  ~ScopedTempDir();
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;

  const std::string& path() const { return path_; }
  // path()/name (the file itself is not created).
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace vitserve
