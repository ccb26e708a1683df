// Test helpers for the readers of requests in gRPC's byte buffers (server/api/deferred_*.h):
// a buffer cut into slices, and random mutations of serialised bytes for differential tests
// against protobuf. Header-only.
#pragma once

#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace vitserve::testing {

// A gRPC byte buffer of `bytes` cut into slices of `slice_size` (gRPC's receive buffers are
// slices too, so one field's bytes usually span several).
inline grpc::ByteBuffer BufferOf(const std::string& bytes, size_t slice_size) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += slice_size) {
    slices.emplace_back(bytes.data() + at, std::min(slice_size, bytes.size() - at));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

// `original` with one to three random edits: a byte overwritten, inserted or removed, or the
// bytes cut at some point.
inline std::string MutatedBytes(const std::string& original, std::mt19937& rng) {
  std::string bytes = original;
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !bytes.empty(); ++e) {
    const size_t at = rng() % bytes.size();
    switch (rng() % 4) {
      case 0:
        bytes[at] = static_cast<char>(rng());
        break;
      case 1:
        bytes.insert(at, 1, static_cast<char>(rng()));
        break;
      case 2:
        bytes.erase(at, 1);
        break;
      default:
        bytes.resize(at);
    }
  }
  return bytes;
}

}  // namespace vitserve::testing
