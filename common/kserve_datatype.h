// Sizes of the KServe v2 (Triton) tensor datatypes, for code on both sides of the protocol.
#pragma once

#include <cstdint>
#include <string_view>

namespace vitserve {

// Bytes per element of a fixed-size KServe datatype ("FP32", "UINT8", ...), or 0 for BYTES
// (variable length) and for names the protocol does not define. Which datatypes a model or a
// tool accepts is a separate question, answered where it is asked.
inline int64_t KServeDatatypeBytes(std::string_view datatype) {
  if (datatype == "BOOL" || datatype == "UINT8" || datatype == "INT8") return 1;
  if (datatype == "FP16" || datatype == "BF16" || datatype == "UINT16" || datatype == "INT16") {
    return 2;
  }
  if (datatype == "FP32" || datatype == "UINT32" || datatype == "INT32") return 4;
  if (datatype == "FP64" || datatype == "UINT64" || datatype == "INT64") return 8;
  return 0;
}

}  // namespace vitserve
