// Triton's system shared-memory extension for KServe ModelInfer: a client on the same host puts
// a tensor in a POSIX shared memory object, registers (a window of) it once under a name
// (SystemSharedMemoryRegister), and then each request names the region instead of carrying the
// bytes, through the tensor parameters "shared_memory_region" (string), "shared_memory_byte_size"
// (int64) and "shared_memory_offset" (int64, default 0) of an input or a requested output.
// The server reads inputs from the region and writes outputs into it; an output placed there
// keeps its entry in the response (name, datatype, shape) with empty raw_output_contents.
//
// Off unless the server runs with --allow-client-shm, as in Triton: a client that can register
// a region makes the server map memory it names, and one that shrinks the object afterwards can
// crash the server (SIGBUS on the next read), so only trusted local clients should get it.
//
// Ownership: the registry owns its mappings. A request pins the regions it uses (a shared_ptr)
// from BindSharedMemory until its last copy, so unregistering a region in use unmaps it only
// when that request is done.
// Thread-safety: SharedMemoryRegistry is safe from any thread; the other functions are pure.
// Errors: INVALID_ARGUMENT (bad names, keys, sizes, parameters; a window outside its region or
// object; an output larger than its window), ALREADY_EXISTS (a name registered twice),
// NOT_FOUND (an unknown region, a key with no object), FAILED_PRECONDITION (the extension off),
// INTERNAL (mmap failed).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "inference/grpc_service.pb.h"
#include "server/api/kserve_tensor.h"

namespace vitserve {

// One mapped region: `size` bytes of the object `key` from `offset`, unmapped on destruction.
class MappedRegion {
 public:
  // Maps `byte_size` bytes of the POSIX shared memory object `key` from `offset`, read-write.
  static absl::StatusOr<std::shared_ptr<const MappedRegion>> Map(const std::string& key,
                                                                 uint64_t offset,
                                                                 uint64_t byte_size);
  ~MappedRegion();
  MappedRegion(const MappedRegion&) = delete;
  MappedRegion& operator=(const MappedRegion&) = delete;

  const std::string& key() const { return key_; }
  uint64_t offset() const { return offset_; }
  uint64_t size() const { return size_; }
  // The region's first byte. Writable: the server places outputs here.
  uint8_t* data() const { return data_; }

 private:
  MappedRegion(std::string key, uint64_t offset, uint64_t size, void* mapping,
               size_t mapping_bytes, uint8_t* data)
      : key_(std::move(key)),
        offset_(offset),
        size_(size),
        mapping_(mapping),
        mapping_bytes_(mapping_bytes),
        data_(data) {}

  const std::string key_;
  const uint64_t offset_;
  const uint64_t size_;
  void* const mapping_;  // mmap's address (page-aligned, at or before data_).
  const size_t mapping_bytes_;
  uint8_t* const data_;
};

// A window of a registered region that one tensor of one request uses.
struct SharedMemorySlice {
  std::shared_ptr<const MappedRegion> region;  // Keeps the mapping alive.
  uint8_t* data = nullptr;
  uint64_t byte_size = 0;
};

// The regions registered by clients, by name. Owned by the server; borrowed by the services.
class SharedMemoryRegistry {
 public:
  // `enabled` false: Register and tensors that name regions fail with FAILED_PRECONDITION,
  // status and unregistration answer as for an empty registry.
  explicit SharedMemoryRegistry(bool enabled) : enabled_(enabled) {}

  bool enabled() const { return enabled_; }

  absl::Status Register(const std::string& name, const std::string& key, uint64_t offset,
                        uint64_t byte_size);
  // `name` empty: every region. An unknown name is not an error (Triton answers it the same).
  void Unregister(const std::string& name);
  // Every region (`name` empty) or the one named: NOT_FOUND when it is not registered.
  absl::Status Status(const std::string& name,
                      inference::SystemSharedMemoryStatusResponse* response) const;
  // `byte_size` bytes from `offset` of region `name`.
  absl::StatusOr<SharedMemorySlice> Slice(const std::string& name, int64_t offset,
                                          int64_t byte_size) const;

 private:
  const bool enabled_;
  mutable absl::Mutex mutex_;
  std::map<std::string, std::shared_ptr<const MappedRegion>> regions_ ABSL_GUARDED_BY(mutex_);
};

// Where one tensor's parameters place it: nothing when it names no region.
struct SharedMemoryPlacement {
  std::string region;
  int64_t offset = 0;
  int64_t byte_size = 0;
};
absl::StatusOr<std::optional<SharedMemoryPlacement>> SharedMemoryPlacementOf(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
    const std::string& tensor_name);

// The shared memory a ModelInfer request uses, resolved and pinned when it arrives.
struct SharedMemoryBindings {
  std::optional<ExternalRawInputs> input;  // The input's bytes, when it names a region.
  std::vector<std::pair<std::string, SharedMemorySlice>> outputs;  // By output name.

  bool empty() const { return !input.has_value() && outputs.empty(); }
};

// Resolves the regions `request`'s input and outputs name. `has_raw_contents`: whether the
// request carries raw_input_contents (in its message or left in gRPC's buffer); an input that
// names a region must carry no bytes of its own.
absl::StatusOr<SharedMemoryBindings> BindSharedMemory(const inference::ModelInferRequest& request,
                                                      bool has_raw_contents,
                                                      const SharedMemoryRegistry& registry);

// Copies every output of `response` that `bindings` places in shared memory into its window
// and empties its raw_output_contents entry. INVALID_ARGUMENT when one does not fit.
absl::Status PlaceOutputsInSharedMemory(const SharedMemoryBindings& bindings,
                                        inference::ModelInferResponse* response);

}  // namespace vitserve
