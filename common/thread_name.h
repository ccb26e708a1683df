// Names the calling thread (Linux: pthread_setname_np, at most 15 characters; longer names are
// cut), so per-thread CPU time can be read from /proc/PID/task/*/comm and stat, and profilers
// and debuggers show what each thread is for: "preprocess", "executor-0", "http-worker", ...
// Thread-safety: affects only the calling thread. Errors: none (naming is best effort).
#pragma once

#include <pthread.h>

#include <string>
#include <string_view>

namespace vitserve {

inline void SetCurrentThreadName(std::string_view name) {
  const std::string cut(name.substr(0, 15));
  (void)pthread_setname_np(pthread_self(), cut.c_str());
}

}  // namespace vitserve
