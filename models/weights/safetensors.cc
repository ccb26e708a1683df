#include "models/weights/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "models/weights/internal/safetensors_header.h"

namespace vitserve {
namespace {


// Headers of real checkpoints are a few hundred KiB; the reference implementation caps them at
// 100 MB. A larger value means a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = 100u << 20;

struct DtypeEntry {
  const char* name;
  int64_t itemsize;
  at::ScalarType readable;  // Undefined: valid in the format but not readable here.
};

// The format's dtype table (safetensors' Dtype enum).
constexpr DtypeEntry kDtypes[] = {
    {"F32", 4, at::kFloat},
    {"F16", 2, at::kHalf},
    {"BF16", 2, at::kBFloat16},
    {"F64", 8, at::ScalarType::Undefined},
    {"I64", 8, at::ScalarType::Undefined},
    {"U64", 8, at::ScalarType::Undefined},
    {"I32", 4, at::ScalarType::Undefined},
    {"U32", 4, at::ScalarType::Undefined},
    {"I16", 2, at::ScalarType::Undefined},
    {"U16", 2, at::ScalarType::Undefined},
    {"I8", 1, at::ScalarType::Undefined},
    {"U8", 1, at::ScalarType::Undefined},
    {"BOOL", 1, at::ScalarType::Undefined},
    {"F8_E4M3", 1, at::ScalarType::Undefined},
    {"F8_E5M2", 1, at::ScalarType::Undefined},
};

const DtypeEntry* FindDtype(absl::string_view name) {
  for (const DtypeEntry& entry : kDtypes) {
    if (name == entry.name) return &entry;
  }
  return nullptr;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

}  // namespace

std::string_view SafetensorsDtypeName(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "F32";
    case at::kHalf:
      return "F16";
    case at::kBFloat16:
      return "BF16";
    default:
      return "";
  }
}

struct SafetensorsFile::Mapping {
  void* address = nullptr;
  size_t size = 0;
  Mapping(void* a, size_t s) : address(a), size(s) {}
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() {
    if (address != nullptr) munmap(address, size);
  }
};

absl::StatusOr<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  auto fail = [&path](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("safetensors file '", path, "': ", what));
  };
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    const std::string message =
        absl::StrCat("cannot open safetensors file '", path, "': ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(message) : absl::InvalidArgumentError(message);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return fail("not a regular file");
  }
  const uint64_t file_size = static_cast<uint64_t>(st.st_size);
  if (file_size < 8) {
    ::close(fd);
    return fail(
        absl::StrCat("file is ", file_size, " bytes, shorter than the 8-byte header length"));
  }
  void* address = ::mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);  // The mapping stays valid after the descriptor is closed.
  if (address == MAP_FAILED) {
    return fail(absl::StrCat("mmap failed: ", std::strerror(errno)));
  }
  SafetensorsFile file;
  file.path_ = path;
  auto mapping = std::make_shared<Mapping>(address, file_size);
  file.mapping_ = mapping;
  const auto* bytes = static_cast<const uint8_t*>(address);

  uint64_t header_size = 0;
  for (int i = 7; i >= 0; --i) header_size = (header_size << 8) | bytes[i];  // Little endian.
  if (header_size > kMaxHeaderBytes) {
    return fail(absl::StrCat("header length ", header_size, " exceeds the ", kMaxHeaderBytes,
                             "-byte limit (corrupt file?)"));
  }
  if (header_size > file_size - 8) {
    return fail(absl::StrCat("header length ", header_size, " runs past the end of the ", file_size,
                             "-byte file (truncated?)"));
  }
  const std::string_view header_text(reinterpret_cast<const char*>(bytes + 8), header_size);
  absl::StatusOr<weights_internal::SafetensorsHeader> header =
      weights_internal::ParseSafetensorsHeader(header_text);
  if (!header.ok()) return fail(header.status().message());

  file.data_ = bytes + 8 + header_size;
  const int64_t data_size = static_cast<int64_t>(file_size - 8 - header_size);
  file.metadata_ = std::move(header->metadata);

  for (weights_internal::SafetensorsHeaderEntry& entry : header->tensors) {
    auto tensor_fail = [&](absl::string_view what) {
      return fail(absl::StrCat("tensor '", entry.name, "': ", what));
    };
    SafetensorsTensorInfo info;
    const DtypeEntry* dtype_entry = FindDtype(entry.dtype);
    if (dtype_entry == nullptr) return tensor_fail(absl::StrCat("unknown dtype ", entry.dtype));
    info.dtype_name = entry.dtype;
    info.dtype = dtype_entry->readable;
    // numel * itemsize is checked against the byte range with overflow guards: a huge shape
    // in a corrupt header must not wrap around and pass.
    const int64_t itemsize = dtype_entry->itemsize;
    int64_t numel = 1;
    for (int64_t dim : entry.shape) {
      if (dim != 0 && numel > std::numeric_limits<int64_t>::max() / itemsize / dim) {
        return tensor_fail("shape is too large");
      }
      numel *= dim;
    }
    info.shape = std::move(entry.shape);
    if (entry.end > data_size) {
      return tensor_fail(absl::StrCat("data [", entry.begin, ", ", entry.end,
                                      ") runs past the end of the ", data_size,
                                      "-byte data section (truncated file?)"));
    }
    if (entry.end - entry.begin != numel * itemsize) {
      return tensor_fail(absl::StrCat("holds ", entry.end - entry.begin, " bytes but shape ",
                                      ShapeString(info.shape), " of ", entry.dtype, " needs ",
                                      numel * itemsize));
    }
    info.begin = entry.begin;
    info.end = entry.end;
    file.tensors_.emplace(entry.name, std::move(info));
  }
  return file;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<at::Tensor> SafetensorsFile::Tensor(std::string_view name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(
        absl::StrCat("safetensors file '", path_, "' has no tensor '", std::string(name), "'"));
  }
  const SafetensorsTensorInfo& info = it->second;
  if (info.dtype == at::ScalarType::Undefined) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file '", path_, "': tensor '", std::string(name), "' has dtype ",
                     info.dtype_name, "; only F32, F16 and BF16 tensors can be read"));
  }
  const auto options = at::TensorOptions().dtype(info.dtype).device(at::kCPU);
  const uint8_t* begin = data_ + info.begin;
  const size_t itemsize = c10::elementSize(info.dtype);
  if (reinterpret_cast<uintptr_t>(begin) % itemsize != 0) {
    // The format does not promise alignment; kernels may assume it, so copy.
    at::Tensor copy = at::empty(info.shape, options);
    std::memcpy(copy.data_ptr(), begin, static_cast<size_t>(info.end - info.begin));
    return copy;
  }
  // The deleter holds a reference to the mapping, so the view keeps the file mapped.
  std::shared_ptr<const Mapping> keep_alive = mapping_;
  return at::from_blob(
      const_cast<uint8_t*>(begin), info.shape, [keep_alive](void*) mutable { keep_alive.reset(); },
      options);
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::map<std::string, at::Tensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> contiguous;
  contiguous.reserve(tensors.size());
  weights_internal::SafetensorsHeader layout;
  layout.metadata = metadata;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (name == "__metadata__" || name.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("invalid tensor name '", name, "'"));
    }
    const std::string_view dtype = SafetensorsDtypeName(tensor.scalar_type());
    if (dtype.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "' has dtype ",
                                                     c10::toString(tensor.scalar_type()),
                                                     "; only F32, F16 and BF16 are written"));
    }
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    const int64_t bytes = cpu.numel() * static_cast<int64_t>(cpu.element_size());
    layout.tensors.push_back({name, std::string(dtype),
                              std::vector<int64_t>(cpu.sizes().begin(), cpu.sizes().end()),
                              offset, offset + bytes});
    offset += bytes;
    contiguous.push_back(std::move(cpu));
  }
  absl::StatusOr<std::string> json = weights_internal::SafetensorsHeaderJson(layout);
  if (!json.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("safetensors file '", path, "': ", json.status().message()));
  }
  std::string header = *std::move(json);
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  while ((8 + header.size()) % 8 != 0) header.push_back(' ');

  const std::string temp_path = absl::StrCat(path, ".tmp.", ::getpid());
  std::FILE* out = std::fopen(temp_path.c_str(), "wb");
  if (out == nullptr) {
    return absl::InternalError(
        absl::StrCat("cannot create '", temp_path, "': ", std::strerror(errno)));
  }
  uint8_t length[8];
  uint64_t header_size = header.size();
  for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(header_size >> (8 * i));
  bool ok = std::fwrite(length, 1, 8, out) == 8 &&
            std::fwrite(header.data(), 1, header.size(), out) == header.size();
  for (const at::Tensor& t : contiguous) {
    if (!ok) break;
    const size_t bytes = static_cast<size_t>(t.numel()) * t.element_size();
    ok = bytes == 0 || std::fwrite(t.data_ptr(), 1, bytes, out) == bytes;
  }
  ok = (std::fclose(out) == 0) && ok;
  if (!ok || std::rename(temp_path.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(temp_path.c_str());
    return absl::InternalError(
        absl::StrCat("writing safetensors file '", path, "' failed: ", std::strerror(err)));
  }
  return absl::OkStatus();
}

}  // namespace vitserve
