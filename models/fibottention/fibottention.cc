#include "models/fibottention/fibottention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#ifdef VITSERVE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "models/fibottention/internal/fib_kernels.h"
#endif

namespace vitserve {
namespace {

// CPython's Mersenne Twister (Modules/_randommodule.c): init_by_array seeding from the 32-bit
// words of |seed|, genrand_uint32, and getrandbits(k ≤ 32) = genrand_uint32() >> (32 − k).
class PythonMersenneTwister {
 public:
  explicit PythonMersenneTwister(int64_t seed) {
    uint64_t n = seed < 0 ? static_cast<uint64_t>(-seed) : static_cast<uint64_t>(seed);
    std::vector<uint32_t> key;
    do {  // random_seed(): little-endian 32-bit words; 0 → [0].
      key.push_back(static_cast<uint32_t>(n & 0xffffffffu));
      n >>= 32;
    } while (n != 0);
    InitByArray(key);
  }

  uint32_t GetRandBits(int k) { return Next() >> (32 - k); }

 private:
  static constexpr int kN = 624, kM = 397;

  void InitGenrand(uint32_t s) {
    mt_[0] = s;
    for (int i = 1; i < kN; ++i) {
      mt_[i] = 1812433253u * (mt_[i - 1] ^ (mt_[i - 1] >> 30)) + static_cast<uint32_t>(i);
    }
    index_ = kN;
  }

  void InitByArray(const std::vector<uint32_t>& key) {
    InitGenrand(19650218u);
    int i = 1;
    size_t j = 0;
    for (size_t k = std::max<size_t>(kN, key.size()); k > 0; --k) {
      mt_[i] = (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1664525u)) + key[j] +
               static_cast<uint32_t>(j);
      ++i;
      ++j;
      if (i >= kN) {
        mt_[0] = mt_[kN - 1];
        i = 1;
      }
      if (j >= key.size()) j = 0;
    }
    for (int k = kN - 1; k > 0; --k) {
      mt_[i] =
          (mt_[i] ^ ((mt_[i - 1] ^ (mt_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
      ++i;
      if (i >= kN) {
        mt_[0] = mt_[kN - 1];
        i = 1;
      }
    }
    mt_[0] = 0x80000000u;
  }

  uint32_t Next() {
    if (index_ >= kN) {
      for (int kk = 0; kk < kN; ++kk) {
        const uint32_t y = (mt_[kk] & 0x80000000u) | (mt_[(kk + 1) % kN] & 0x7fffffffu);
        mt_[kk] = mt_[(kk + kM) % kN] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
      }
      index_ = 0;
    }
    uint32_t y = mt_[index_++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= (y >> 18);
    return y;
  }

  std::array<uint32_t, kN> mt_{};
  int index_ = kN;
};

int BitLength(uint64_t n) {
  int bits = 0;
  while (n != 0) {
    ++bits;
    n >>= 1;
  }
  return bits;
}

// get_fibonacci(a, b, w): [a, b, a+b, …] while the last ≤ w, then the last element dropped.
std::vector<int64_t> Fibonacci(int64_t a, int64_t b, int64_t w) {
  std::vector<int64_t> seq{a, b};
  while (seq.back() <= w) seq.push_back(seq.back() + seq[seq.size() - 2]);
  seq.pop_back();
  return seq;
}

void CheckQkv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
              const FibottentionPattern& pattern) {
  TORCH_CHECK(q.dim() == 4 && k.sizes() == q.sizes() && v.sizes() == q.sizes(),
              "Fibottention expects q, k, v [B, H, T, d] of one shape, got ", q.sizes(), ", ",
              k.sizes(), ", ", v.sizes());
  TORCH_CHECK(q.size(1) == pattern.heads && q.size(2) == pattern.tokens,
              "Fibottention pattern is for ", pattern.heads, " heads × ", pattern.tokens,
              " tokens, input has ", q.size(1), " × ", q.size(2));
}

}  // namespace

std::vector<std::vector<int64_t>> FibottentionHeadOffsets(int64_t patch_tokens, int64_t heads,
                                                          int64_t wmin, bool modified) {
  TORCH_CHECK(heads >= 1 && patch_tokens >= 1, "Fibottention needs heads ≥ 1 and tokens ≥ 1");
  const int64_t wmax = patch_tokens / 3;  // Python's N // 3 for N ≥ 0.
  const double phi = (1.0 + std::sqrt(5.0)) / 2.0;
  std::vector<std::vector<int64_t>> offsets(heads);
  for (int64_t i = 1; i <= heads; ++i) {
    const double fi = std::floor(static_cast<double>(i) * phi);
    const auto a = static_cast<int64_t>(std::floor(fi * phi));
    const auto b = static_cast<int64_t>(std::floor(fi * std::pow(phi, 2)));
    // int() truncates toward zero; with one head the official code divides by zero, we use w_min.
    const int64_t w = heads == 1 ? wmin
                                 : wmin + static_cast<int64_t>(static_cast<double>(wmax - wmin) /
                                                               static_cast<double>(heads - 1) *
                                                               static_cast<double>(i - 1));
    offsets[i - 1] = modified ? Fibonacci(a - (b - a), b - a, w) : Fibonacci(a, b, w);
  }
  return offsets;
}

std::vector<int64_t> PythonShuffledRange(int64_t n, int64_t seed) {
  std::vector<int64_t> x(n);
  for (int64_t i = 0; i < n; ++i) x[i] = i;
  PythonMersenneTwister rng(seed);
  for (int64_t i = n - 1; i >= 1; --i) {  // random.shuffle → _randbelow(i + 1).
    const uint64_t bound = static_cast<uint64_t>(i + 1);
    const int bits = BitLength(bound);
    uint64_t r = rng.GetRandBits(bits);
    while (r >= bound) r = rng.GetRandBits(bits);
    std::swap(x[i], x[static_cast<int64_t>(r)]);
  }
  return x;
}

std::vector<std::vector<int64_t>> FibottentionLayerOffsets(int64_t patch_tokens, int64_t heads,
                                                           int64_t depth_id, int64_t wmin,
                                                           bool modified) {
  const auto offsets = FibottentionHeadOffsets(patch_tokens, heads, wmin, modified);
  const std::vector<int64_t> perm = PythonShuffledRange(heads, depth_id);
  std::vector<std::vector<int64_t>> shuffled(heads);
  for (int64_t h = 0; h < heads; ++h) shuffled[h] = offsets[perm[h]];
  return shuffled;
}

at::Tensor FibottentionDenseMask(const std::vector<std::vector<int64_t>>& head_offsets,
                                 int64_t patch_tokens, bool class_token) {
  const auto heads = static_cast<int64_t>(head_offsets.size());
  const int64_t n = patch_tokens, prefix = class_token ? 1 : 0;
  at::Tensor mask = at::zeros({heads, n + prefix, n + prefix});
  auto acc = mask.accessor<float, 3>();
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t o : head_offsets[h]) {
      for (int64_t j = 0; j < n; ++j) {
        if (j + o >= 0 && j + o < n) acc[h][prefix + j][prefix + j + o] = 1;
        if (j - o >= 0 && j - o < n) acc[h][prefix + j][prefix + j - o] = 1;
      }
    }
    if (class_token) {
      for (int64_t t = 0; t < n + 1; ++t) acc[h][0][t] = acc[h][t][0] = 1;
    }
  }
  return mask;
}

FibottentionPattern MakeFibottentionPattern(const std::vector<std::vector<int64_t>>& head_offsets,
                                            int64_t patch_tokens, bool class_token) {
  FibottentionPattern pattern;
  pattern.heads = static_cast<int64_t>(head_offsets.size());
  const int64_t n = patch_tokens, prefix = class_token ? 1 : 0;
  pattern.tokens = n + prefix;
  pattern.class_token = class_token;
  // Each head's distinct signed offsets, ascending: patch j keeps patch j + s for each s that
  // lands on a patch (the official mask: j ± o, no self diagonal unless an offset is 0).
  std::vector<std::vector<int32_t>> shifts(pattern.heads);
  int64_t shift_width = 1;
  for (int64_t h = 0; h < pattern.heads; ++h) {
    for (int64_t o : head_offsets[h]) {
      shifts[h].push_back(static_cast<int32_t>(o));
      shifts[h].push_back(static_cast<int32_t>(-o));
    }
    std::sort(shifts[h].begin(), shifts[h].end());
    shifts[h].erase(std::unique(shifts[h].begin(), shifts[h].end()), shifts[h].end());
    shift_width = std::max<int64_t>(shift_width, static_cast<int64_t>(shifts[h].size()));
  }
  pattern.shifts = at::full({pattern.heads, shift_width}, FibottentionPattern::kShiftPadding,
                            at::kInt);
  auto shift_acc = pattern.shifts.accessor<int32_t, 2>();
  for (int64_t h = 0; h < pattern.heads; ++h) {
    for (size_t j = 0; j < shifts[h].size(); ++j) shift_acc[h][j] = shifts[h][j];
  }
  // The index lists from the shifts: the class token first, then the patches, already in
  // increasing order and distinct because the shifts are.
  std::vector<std::vector<std::vector<int64_t>>> rows(pattern.heads,
                                                      std::vector<std::vector<int64_t>>(n));
  int64_t width = 1;
  for (int64_t h = 0; h < pattern.heads; ++h) {
    for (int64_t j = 0; j < n; ++j) {
      std::vector<int64_t>& keys = rows[h][j];
      if (class_token) keys.push_back(0);
      for (int32_t shift : shifts[h]) {
        if (j + shift >= 0 && j + shift < n) keys.push_back(prefix + j + shift);
      }
      width = std::max<int64_t>(width, static_cast<int64_t>(keys.size()));
    }
  }
  pattern.index = at::zeros({pattern.heads, pattern.tokens, width}, at::kLong);
  pattern.count = at::zeros({pattern.heads, pattern.tokens}, at::kLong);
  auto index = pattern.index.accessor<int64_t, 3>();
  auto count = pattern.count.accessor<int64_t, 2>();
  for (int64_t h = 0; h < pattern.heads; ++h) {
    if (class_token) count[h][0] = pattern.tokens;  // The class row sees every key.
    for (int64_t j = 0; j < n; ++j) {
      const std::vector<int64_t>& keys = rows[h][j];
      count[h][prefix + j] = static_cast<int64_t>(keys.size());
      for (size_t c = 0; c < keys.size(); ++c) index[h][prefix + j][c] = keys[c];
    }
  }
  return pattern;
}

FibottentionPattern PatternTo(const FibottentionPattern& pattern, const at::Device& device) {
  FibottentionPattern moved = pattern;
  moved.index = pattern.index.to(device);
  moved.count = pattern.count.to(device);
  moved.shifts = pattern.shifts.to(device);
  return moved;
}

at::Tensor FibottentionAttentionCpu(const at::Tensor& q_in, const at::Tensor& k_in,
                                    const at::Tensor& v_in, const FibottentionPattern& pattern,
                                    FibottentionSemantics semantics, double scale) {
  CheckQkv(q_in, k_in, v_in, pattern);
  TORCH_CHECK(q_in.device().is_cpu(), "FibottentionAttentionCpu needs CPU tensors");
  const at::Tensor q = q_in.to(at::kFloat).contiguous();
  const at::Tensor k = k_in.to(at::kFloat).contiguous();
  const at::Tensor v = v_in.to(at::kFloat).contiguous();
  const at::Tensor index = pattern.index.to(at::kCPU).contiguous();
  const at::Tensor count = pattern.count.to(at::kCPU).contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), tokens = q.size(2), dim = q.size(3);
  const int64_t width = index.size(2);
  const bool official = semantics == FibottentionSemantics::kOfficial;
  at::Tensor out = at::empty_like(q);
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const int64_t* ip = index.data_ptr<int64_t>();
  const int64_t* cp = count.data_ptr<int64_t>();
  float* op = out.data_ptr<float>();
  const auto fscale = static_cast<float>(scale);
  at::parallel_for(0, batch * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> logits(tokens), colsum(dim), kept(dim);
    std::vector<double> acc(dim);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t h = bh % heads;
      const float* qb = qp + bh * tokens * dim;
      const float* kb = kp + bh * tokens * dim;
      const float* vb = vp + bh * tokens * dim;
      float* ob = op + bh * tokens * dim;
      if (official) {
        std::fill(colsum.begin(), colsum.end(), 0.f);
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t e = 0; e < dim; ++e) colsum[e] += vb[t * dim + e];
        }
      }
      for (int64_t t = 0; t < tokens; ++t) {
        const int64_t c = cp[h * tokens + t];
        const bool all = c == tokens;  // The class row (or a row that keeps every key).
        const int64_t* keys = ip + (h * tokens + t) * width;
        const float* qt = qb + t * dim;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < c; ++j) {
          const float* kj = kb + (all ? j : keys[j]) * dim;
          float s = 0.f;
          for (int64_t e = 0; e < dim; ++e) s += qt[e] * kj[e];
          logits[j] = s * fscale;
          m = std::max(m, logits[j]);
        }
        const bool dropped = official && c < tokens;  // Masked pairs still weigh exp(0).
        if (dropped) m = std::max(m, 0.f);
        std::fill(acc.begin(), acc.end(), 0.0);
        if (dropped) std::fill(kept.begin(), kept.end(), 0.f);
        double den = 0.0;
        for (int64_t j = 0; j < c; ++j) {
          const float* vj = vb + (all ? j : keys[j]) * dim;
          const float p = std::exp(logits[j] - m);
          den += p;
          for (int64_t e = 0; e < dim; ++e) acc[e] += static_cast<double>(p) * vj[e];
          if (dropped) {
            for (int64_t e = 0; e < dim; ++e) kept[e] += vj[e];
          }
        }
        if (dropped) {
          const double e0 = std::exp(-static_cast<double>(m));
          den += static_cast<double>(tokens - c) * e0;
          for (int64_t e = 0; e < dim; ++e) acc[e] += e0 * (colsum[e] - kept[e]);
        }
        float* ot = ob + t * dim;
        if (c == 0 && !official) {  // An empty row under −∞ masking: softmax of nothing → NaN.
          for (int64_t e = 0; e < dim; ++e) ot[e] = std::numeric_limits<float>::quiet_NaN();
          continue;
        }
        for (int64_t e = 0; e < dim; ++e) ot[e] = static_cast<float>(acc[e] / den);
      }
    }
  });
  return out.to(q_in.scalar_type());
}

at::Tensor FibottentionAttentionGather(const at::Tensor& q_in, const at::Tensor& k_in,
                                       const at::Tensor& v_in, const FibottentionPattern& pattern,
                                       FibottentionSemantics semantics, double scale) {
  CheckQkv(q_in, k_in, v_in, pattern);
  const at::Tensor q = q_in.to(at::kFloat), k = k_in.to(at::kFloat), v = v_in.to(at::kFloat);
  const int64_t batch = q.size(0), heads = q.size(1), tokens = q.size(2), dim = q.size(3);
  const bool class_token = pattern.class_token;
  const int64_t start = class_token ? 1 : 0, rows = tokens - start;
  const at::Tensor index = pattern.index.to(q.device()).narrow(1, start, rows);  // [H,R,K]
  const at::Tensor count = pattern.count.to(q.device()).narrow(1, start, rows);  // [H,R]
  const int64_t width = index.size(2);
  const at::Tensor valid =
      at::arange(width, count.options()).view({1, 1, width}) < count.unsqueeze(-1);  // [H,R,K]
  auto gather = [&](const at::Tensor& x) {  // [B,H,T,d] → [B,H,R,K,d]
    const at::Tensor flat =
        index.reshape({1, heads, rows * width, 1}).expand({batch, heads, -1, dim});
    return at::gather(x, 2, flat).view({batch, heads, rows, width, dim});
  };
  const at::Tensor kg = gather(k), vg = gather(v);
  const at::Tensor qr = q.narrow(2, start, rows);
  at::Tensor s = (qr.unsqueeze(3) * kg).sum(-1) * scale;  // [B,H,R,K]
  s = s.masked_fill(valid.logical_not(), -std::numeric_limits<float>::infinity());
  at::Tensor m = std::get<0>(s.max(-1, /*keepdim=*/true));
  const bool official = semantics == FibottentionSemantics::kOfficial;
  const at::Tensor extra = (tokens - count).to(at::kFloat).unsqueeze(-1);  // [H,R,1]
  if (official) m = at::where(extra > 0, at::clamp_min(m, 0), m);
  const at::Tensor p = at::exp(s - m);  // Padding → exp(−∞) = 0.
  at::Tensor num = (p.unsqueeze(-1) * vg).sum(3);
  at::Tensor den = p.sum(-1, /*keepdim=*/true);
  if (official) {
    const at::Tensor e0 = at::exp(-m);
    const at::Tensor kept = (valid.unsqueeze(-1).to(at::kFloat) * vg).sum(3);
    num = num + e0 * (v.sum(2, /*keepdim=*/true) - kept);
    den = den + extra * e0;
  }
  at::Tensor out = num / den;
  if (class_token) {
    const at::Tensor first =
        at::scaled_dot_product_attention(q.narrow(2, 0, 1), k, v, {}, 0.0, false, scale);
    out = at::cat({first, out}, 2);
  }
  return out.to(q_in.scalar_type());
}

#ifdef VITSERVE_WITH_CUDA
at::Tensor FibottentionAttentionCuda(const at::Tensor& q_in, const at::Tensor& k_in,
                                     const at::Tensor& v_in, const FibottentionPattern& pattern,
                                     FibottentionSemantics semantics, double scale,
                                     const FibottentionCudaOptions& options) {
  CheckQkv(q_in, k_in, v_in, pattern);
  TORCH_CHECK(q_in.is_cuda() && k_in.device() == q_in.device() && v_in.device() == q_in.device(),
              "FibottentionAttentionCuda needs q, k, v on one CUDA device");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
  const bool official = semantics == FibottentionSemantics::kOfficial;
  at::Tensor out = at::empty_like(q);
  fibottention::internal::FibParams p;
  p.batch = static_cast<int>(q.size(0));
  p.heads = static_cast<int>(q.size(1));
  p.tokens = static_cast<int>(q.size(2));
  p.dim = static_cast<int>(q.size(3));
  switch (q.scalar_type()) {
    case at::kFloat:
      p.dtype = fibottention::internal::FibDtype::kFloat32;
      break;
    case at::kHalf:
      p.dtype = fibottention::internal::FibDtype::kFloat16;
      break;
    case at::kBFloat16:
      p.dtype = fibottention::internal::FibDtype::kBFloat16;
      break;
    default:
      TORCH_CHECK(false, "Fibottention CUDA kernel: unsupported dtype ", q.scalar_type());
  }
  p.official = official;
  p.scale = static_cast<float>(scale);
  p.q = q.data_ptr();
  p.k = k.data_ptr();
  p.v = v.data_ptr();
  p.out = out.data_ptr();
  p.class_token = pattern.class_token;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  using Kernel = FibottentionCudaOptions::Kernel;
  const bool has_shifts = pattern.shifts.defined() && pattern.shifts.dim() == 2 &&
                          pattern.shifts.size(0) == pattern.heads;
  TORCH_CHECK(has_shifts || options.kernel == Kernel::kAuto ||
                  options.kernel == Kernel::kRowPerWarp,
              "Fibottention's tiled, whole-head and tensor-core CUDA kernels need the pattern's "
              "shifts (MakeFibottentionPattern builds them)");
  if (has_shifts && options.kernel != Kernel::kRowPerWarp) {
    namespace fib = fibottention::internal;
    const at::Tensor shifts = pattern.shifts.to(q.device(), at::kInt).contiguous();
    p.shifts = shifts.data_ptr<int32_t>();
    p.shift_width = static_cast<int>(shifts.size(1));
    const fib::TiledShape shape{options.tile_queries, options.threads_per_row};
    // The tiled and tensor-core launches write Σ_t v here (read only with the official
    // semantics).
    const auto colsum_workspace = [&] {
      const int64_t size = official ? q.size(0) * q.size(1) * q.size(3) : 1;
      return at::empty({size}, q.options().dtype(at::kFloat));
    };
    if (options.kernel == Kernel::kTensorCore) {
      TORCH_CHECK(options.threads_per_row == 0 &&
                      fib::MmaFibottentionSupports(p, options.tile_queries),
                  "Fibottention's tensor-core CUDA kernel needs a GPU of compute capability 8.0 "
                  "or above, head dim 64, fp16 or bf16, 16-byte-aligned tensors, at most 65,535 "
                  "batch × heads, at most 128 shifts per head, tile_queries 0, 64 or 128 and "
                  "threads_per_row 0; got head dim ", p.dim, ", ", q.scalar_type(), ", ",
                  q.size(0) * q.size(1), " batch × heads, ", p.shift_width,
                  " shifts, tile_queries ", options.tile_queries, ", threads_per_row ",
                  options.threads_per_row);
      const at::Tensor colsum = colsum_workspace();
      const cudaError_t err =
          fib::LaunchMmaFibottention(p, options.tile_queries, options.overlap_dense_row,
                                     colsum.data_ptr<float>(), stream);
      TORCH_CHECK(err == cudaSuccess, "Fibottention tensor-core CUDA kernel failed: ",
                  cudaGetErrorString(err));
      return out;
    }
    const bool whole_head = fib::WholeHeadFibottentionSupports(p);
    const bool tiled = fib::TiledFibottentionSupports(p, shape);
    TORCH_CHECK(options.kernel != Kernel::kWholeHead || whole_head,
                "Fibottention's whole-head CUDA kernel needs head dim 64, fp16 or bf16, "
                "16-byte-aligned tensors, at most 128 shifts per head and at most 320 tokens; got "
                "head dim ", p.dim, ", ", q.scalar_type(), ", ", p.shift_width, " shifts, ",
                p.tokens, " tokens");
    TORCH_CHECK(options.kernel != Kernel::kTiled || tiled,
                "Fibottention's tiled CUDA kernel needs head dim 64, fp16 or bf16, 16-byte-aligned "
                "tensors, at most 65,535 batch × heads, at most 128 shifts per head, tile_queries "
                "0, 64 or 128 and threads_per_row 0, 1, 2 or 4; got head dim ", p.dim, ", ",
                q.scalar_type(), ", ", q.size(0) * q.size(1), " batch × heads, ", p.shift_width,
                " shifts, tile_queries ", options.tile_queries, ", threads_per_row ",
                options.threads_per_row);
    if (whole_head && options.kernel != Kernel::kTiled) {
      const cudaError_t err = fib::LaunchWholeHeadFibottention(p, stream);
      TORCH_CHECK(err == cudaSuccess, "Fibottention whole-head CUDA kernel failed: ",
                  cudaGetErrorString(err));
      return out;
    }
    if (tiled) {
      const at::Tensor colsum = colsum_workspace();
      const cudaError_t err =
          fib::LaunchTiledFibottention(p, shape, options.overlap_dense_row,
                                       colsum.data_ptr<float>(), stream);
      TORCH_CHECK(err == cudaSuccess, "Fibottention tiled CUDA kernel failed: ",
                  cudaGetErrorString(err));
      return out;
    }
    p.shifts = nullptr;
    p.shift_width = 0;
  }
  const at::Tensor index = pattern.index.to(q.device()).contiguous();
  const at::Tensor count = pattern.count.to(q.device()).contiguous();
  const at::Tensor colsum =
      official ? v.sum(2, /*keepdim=*/false, at::kFloat).contiguous() : at::Tensor();
  p.width = static_cast<int>(index.size(2));
  p.colsum = official ? colsum.data_ptr<float>() : nullptr;
  p.index = index.data_ptr<int64_t>();
  p.count = count.data_ptr<int64_t>();
  const cudaError_t err = fibottention::internal::LaunchFibottention(p, stream);
  TORCH_CHECK(err == cudaSuccess, "Fibottention CUDA kernel failed: ", cudaGetErrorString(err));
  return out;
}
#else
at::Tensor FibottentionAttentionCuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                     const FibottentionPattern&, FibottentionSemantics, double,
                                     const FibottentionCudaOptions&) {
  TORCH_CHECK(false, "FibottentionAttentionCuda: vitserve was built without CUDA");
}
#endif

at::Tensor FibottentionAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const FibottentionPattern& pattern,
                                 FibottentionSemantics semantics, double scale) {
  if (q.device().is_cpu()) return FibottentionAttentionCpu(q, k, v, pattern, semantics, scale);
#ifdef VITSERVE_WITH_CUDA
  if (q.device().is_cuda()) return FibottentionAttentionCuda(q, k, v, pattern, semantics, scale);
#endif
  return FibottentionAttentionGather(q, k, v, pattern, semantics, scale);
}

at::Tensor DenseMaskedAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& mask, FibottentionSemantics semantics,
                                double scale) {
  const at::Tensor qf = q.to(at::kFloat), kf = k.to(at::kFloat), vf = v.to(at::kFloat);
  const at::Tensor m = mask.to(qf.device(), at::kFloat);
  at::Tensor logits = at::matmul(qf * scale, kf.transpose(-2, -1));
  logits = semantics == FibottentionSemantics::kOfficial
               ? logits * m
               : logits.masked_fill(m.eq(0), -std::numeric_limits<float>::infinity());
  return at::matmul(at::softmax(logits, -1), vf);
}

}  // namespace vitserve
