#include "server/api/shared_memory.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"

namespace vitserve {
namespace {

constexpr char kRegionParameter[] = "shared_memory_region";
constexpr char kOffsetParameter[] = "shared_memory_offset";
constexpr char kByteSizeParameter[] = "shared_memory_byte_size";

absl::Status ErrnoStatus(int error, const std::string& what) {
  const std::string message = absl::StrCat(what, ": ", std::strerror(error));
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EINVAL:
    case ENAMETOOLONG:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

// shm_open's rule for portable names: at most one '/', leading.
absl::Status ValidateKey(const std::string& key) {
  const size_t body = !key.empty() && key[0] == '/' ? 1 : 0;
  if (key.size() <= body || key.size() > 255 || key.find('/', body) != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(
        "shared memory key '", key, "' is not a POSIX shared memory object name ('/name', "
        "1 to 254 characters, no other '/')"));
  }
  return absl::OkStatus();
}

// The int64 parameter `name` of tensor `tensor`, when present.
absl::StatusOr<std::optional<int64_t>> Int64Parameter(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
    const char* name, const std::string& tensor) {
  auto it = parameters.find(name);
  if (it == parameters.end()) return std::nullopt;
  if (it->second.parameter_choice_case() != inference::InferParameter::kInt64Param) {
    return absl::InvalidArgumentError(
        absl::StrCat("parameter '", name, "' of tensor '", tensor, "' must be an int64_param"));
  }
  return it->second.int64_param();
}

}  // namespace

absl::StatusOr<std::shared_ptr<const MappedRegion>> MappedRegion::Map(const std::string& key,
                                                                      uint64_t offset,
                                                                      uint64_t byte_size) {
  if (absl::Status valid = ValidateKey(key); !valid.ok()) return valid;
  if (byte_size == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory region of '", key, "' has byte_size 0"));
  }
  const int fd = shm_open(key.c_str(), O_RDWR, 0);
  if (fd < 0) {
    return ErrnoStatus(errno, absl::StrCat("cannot open shared memory object '", key, "'"));
  }
  struct stat info {};
  if (fstat(fd, &info) != 0) {
    const int error = errno;
    close(fd);
    return ErrnoStatus(error, absl::StrCat("cannot stat shared memory object '", key, "'"));
  }
  const uint64_t object_size = static_cast<uint64_t>(info.st_size);
  // Checked here so that no read of the region can run past the object (SIGBUS).
  if (offset > object_size || byte_size > object_size - offset) {
    close(fd);
    return absl::InvalidArgumentError(
        absl::StrCat("shared memory region of '", key, "' at offset ", offset, " with byte_size ",
                     byte_size, " does not fit its object's ", object_size, " bytes"));
  }
  const uint64_t page = static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
  const uint64_t map_start = offset - offset % page;
  const size_t mapping_bytes = static_cast<size_t>(offset - map_start + byte_size);
  void* mapping = mmap(nullptr, mapping_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                       static_cast<off_t>(map_start));
  const int error = errno;
  close(fd);  // The mapping keeps the object.
  if (mapping == MAP_FAILED) {
    return ErrnoStatus(error, absl::StrCat("cannot map shared memory object '", key, "'"));
  }
  uint8_t* data = static_cast<uint8_t*>(mapping) + (offset - map_start);
  return std::shared_ptr<const MappedRegion>(
      new MappedRegion(key, offset, byte_size, mapping, mapping_bytes, data));
}

MappedRegion::~MappedRegion() { munmap(mapping_, mapping_bytes_); }

absl::Status SharedMemoryRegistry::Register(const std::string& name, const std::string& key,
                                            uint64_t offset, uint64_t byte_size) {
  if (!enabled_) {
    return absl::FailedPreconditionError(
        "client shared memory is off; start vitserve with --allow-client-shm to use it");
  }
  if (name.empty()) {
    return absl::InvalidArgumentError("a shared memory region needs a name");
  }
  {
    absl::MutexLock lock(&mutex_);
    if (regions_.count(name) > 0) {
      return absl::AlreadyExistsError(
          absl::StrCat("shared memory region '", name, "' is already registered"));
    }
  }
  // Mapped outside the lock: requests look regions up meanwhile.
  absl::StatusOr<std::shared_ptr<const MappedRegion>> region =
      MappedRegion::Map(key, offset, byte_size);
  if (!region.ok()) return region.status();
  absl::MutexLock lock(&mutex_);
  if (!regions_.emplace(name, *std::move(region)).second) {
    return absl::AlreadyExistsError(
        absl::StrCat("shared memory region '", name, "' is already registered"));
  }
  return absl::OkStatus();
}

void SharedMemoryRegistry::Unregister(const std::string& name) {
  std::map<std::string, std::shared_ptr<const MappedRegion>> dropped;
  {
    absl::MutexLock lock(&mutex_);
    if (name.empty()) {
      dropped.swap(regions_);
    } else if (auto it = regions_.find(name); it != regions_.end()) {
      dropped.emplace(it->first, std::move(it->second));
      regions_.erase(it);
    }
  }
  // `dropped` unmaps here, outside the lock, unless a request still pins a region.
}

absl::Status SharedMemoryRegistry::Status(
    const std::string& name, inference::SystemSharedMemoryStatusResponse* response) const {
  absl::MutexLock lock(&mutex_);
  auto add = [response](const std::string& region_name, const MappedRegion& region) {
    auto& status = (*response->mutable_regions())[region_name];
    status.set_name(region_name);
    status.set_key(region.key());
    status.set_offset(region.offset());
    status.set_byte_size(region.size());
  };
  if (name.empty()) {
    for (const auto& [region_name, region] : regions_) add(region_name, *region);
    return absl::OkStatus();
  }
  auto it = regions_.find(name);
  if (it == regions_.end()) {
    return absl::NotFoundError(absl::StrCat("shared memory region '", name, "' is not registered"));
  }
  add(it->first, *it->second);
  return absl::OkStatus();
}

absl::StatusOr<SharedMemorySlice> SharedMemoryRegistry::Slice(const std::string& name,
                                                              int64_t offset,
                                                              int64_t byte_size) const {
  if (!enabled_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a tensor names shared memory region '", name,
        "' but client shared memory is off; start vitserve with --allow-client-shm"));
  }
  std::shared_ptr<const MappedRegion> region;
  {
    absl::MutexLock lock(&mutex_);
    auto it = regions_.find(name);
    if (it == regions_.end()) {
      return absl::NotFoundError(
          absl::StrCat("shared memory region '", name, "' is not registered"));
    }
    region = it->second;
  }
  const uint64_t size = region->size();
  if (offset < 0 || byte_size <= 0 || static_cast<uint64_t>(offset) > size ||
      static_cast<uint64_t>(byte_size) > size - static_cast<uint64_t>(offset)) {
    return absl::InvalidArgumentError(
        absl::StrCat("offset ", offset, " and byte_size ", byte_size, " are outside shared memory ",
                     "region '", name, "' (", size, " bytes)"));
  }
  SharedMemorySlice slice;
  slice.data = region->data() + offset;
  slice.byte_size = static_cast<uint64_t>(byte_size);
  slice.region = std::move(region);
  return slice;
}

absl::StatusOr<std::optional<SharedMemoryPlacement>> SharedMemoryPlacementOf(
    const google::protobuf::Map<std::string, inference::InferParameter>& parameters,
    const std::string& tensor_name) {
  auto region = parameters.find(kRegionParameter);
  absl::StatusOr<std::optional<int64_t>> offset =
      Int64Parameter(parameters, kOffsetParameter, tensor_name);
  if (!offset.ok()) return offset.status();
  absl::StatusOr<std::optional<int64_t>> byte_size =
      Int64Parameter(parameters, kByteSizeParameter, tensor_name);
  if (!byte_size.ok()) return byte_size.status();
  if (region == parameters.end()) {
    if (offset->has_value() || byte_size->has_value()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", tensor_name, "' has '", kOffsetParameter, "' or '",
                       kByteSizeParameter, "' without '", kRegionParameter, "'"));
    }
    return std::nullopt;
  }
  if (region->second.parameter_choice_case() != inference::InferParameter::kStringParam) {
    return absl::InvalidArgumentError(absl::StrCat("parameter '", kRegionParameter,
                                                   "' of tensor '", tensor_name,
                                                   "' must be a string_param"));
  }
  if (!byte_size->has_value()) {
    return absl::InvalidArgumentError(absl::StrCat("tensor '", tensor_name, "' has '",
                                                   kRegionParameter, "' without '",
                                                   kByteSizeParameter, "'"));
  }
  SharedMemoryPlacement placement;
  placement.region = region->second.string_param();
  placement.offset = offset->value_or(0);
  placement.byte_size = **byte_size;
  return placement;
}

absl::StatusOr<SharedMemoryBindings> BindSharedMemory(const inference::ModelInferRequest& request,
                                                      bool has_raw_contents,
                                                      const SharedMemoryRegistry& registry) {
  SharedMemoryBindings bindings;
  for (const auto& input : request.inputs()) {
    absl::StatusOr<std::optional<SharedMemoryPlacement>> placement =
        SharedMemoryPlacementOf(input.parameters(), input.name());
    if (!placement.ok()) return placement.status();
    if (!placement->has_value()) continue;
    if (has_raw_contents || input.has_contents()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "input '", input.name(), "' names shared memory region '", (*placement)->region,
          "' and also carries data (raw_input_contents or contents); send one or the other"));
    }
    if (request.inputs_size() != 1) continue;  // ParseInferInput refuses the request.
    absl::StatusOr<SharedMemorySlice> slice =
        registry.Slice((*placement)->region, (*placement)->offset, (*placement)->byte_size);
    if (!slice.ok()) return slice.status();
    ExternalRawInputs raw;
    raw.sizes.push_back(slice->byte_size);
    raw.copy = [slice = *std::move(slice)](size_t index, uint8_t* out) {
      if (index != 0) return absl::InternalError(absl::StrCat("no shared memory input ", index));
      std::memcpy(out, slice.data, slice.byte_size);
      return absl::OkStatus();
    };
    bindings.input = std::move(raw);
  }
  for (const auto& output : request.outputs()) {
    absl::StatusOr<std::optional<SharedMemoryPlacement>> placement =
        SharedMemoryPlacementOf(output.parameters(), output.name());
    if (!placement.ok()) return placement.status();
    if (!placement->has_value()) continue;
    absl::StatusOr<SharedMemorySlice> slice =
        registry.Slice((*placement)->region, (*placement)->offset, (*placement)->byte_size);
    if (!slice.ok()) return slice.status();
    bindings.outputs.emplace_back(output.name(), *std::move(slice));
  }
  return bindings;
}

absl::Status PlaceOutputsInSharedMemory(const SharedMemoryBindings& bindings,
                                        inference::ModelInferResponse* response) {
  for (const auto& [name, slice] : bindings.outputs) {
    for (int i = 0; i < response->outputs_size() && i < response->raw_output_contents_size();
         ++i) {
      if (response->outputs(i).name() != name) continue;
      std::string* bytes = response->mutable_raw_output_contents(i);
      if (bytes->size() > slice.byte_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "output '", name, "' has ", bytes->size(), " bytes; its shared memory window holds ",
            slice.byte_size));
      }
      std::memcpy(slice.data, bytes->data(), bytes->size());
      bytes->clear();
    }
  }
  return absl::OkStatus();
}

}  // namespace vitserve
