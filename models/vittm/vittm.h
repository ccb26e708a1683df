// Vision Token Turing Machine, ViTTM (Jajal et al., arXiv 2409.07613, Sec. 3; official code
// pjjajal/EfficientTTMs models/vittm/{vittm,rw_heads,fusion}.py), with the official state_dict
// names so a released checkpoint (after its convert_ema_weights.py) loads unchanged.
//   memory  = memory_embedder(x) + memory_pos_embed   (patch memory_ps, no class token)
//   process = process_embedder(x) + process_pos_embed (patch process_ps)
//   per layer i (Sec. 3.2, Fig. 2):
//     memory, process = read_norm.i(memory), read_norm.i(process)
//     process = fuse(process, read_head.i(memory → process));  process = blocks.i(process)
//     memory, process = write_norm.i(memory), write_norm.i(process)
//     memory = fuse(memory, write_head.i(process → memory))
//   memory head:  mean → fc_norm → head          (timm's `norm` is Identity with avg pooling)
//   process head: process_norm → mean → fc_norm_process → process_head
// Read/write heads: linear attention (φ = ELU+1, fast-transformers; the released model; its
// `proj` is declared, so in the checkpoint, but never applied), TokenLearner-style, cross-
// attention. Fusion: add ("residual", released), erase, add-erase (sigmoid gate per target token).
// The timm parent's unused cls_token, pos_embed and 16-px patch_embed are kept so that loading
// stays strict; with memory_ps = 16 `memory_embedder` IS `patch_embed` (both names, as in
// PyTorch's state_dict()).
// Output: the official evaluation (train_lt.py) reports the two heads' accuracies separately and
// keeps the checkpoint with the best memory-head top-1; it never averages them. The default
// output is therefore the memory head; kProcess and kMean are options.
// Ownership/thread-safety/errors: see vision_model.h; forward() needs img_size × img_size input.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "models/vision_model.h"

namespace vitserve {

enum class VittmRwHead { kLinear, kTokenLearner, kCrossAttention };
enum class VittmFusion { kAdd, kErase, kAddErase };
enum class VittmOutput { kMemoryHead, kProcessHead, kMeanOfHeads };

struct VittmConfig {
  int64_t img_size = 224;
  int64_t patch_size = 16;  // The timm parent's patch_embed (used for memory when equal).
  int64_t memory_ps = 16;
  int64_t process_ps = 32;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t mlp_ratio = 4;
  VittmRwHead rw_head = VittmRwHead::kLinear;  // Released: "lin".
  int64_t latent_size_scale = 4;               // Released: QK width = embed_dim / 4.
  VittmFusion fusion = VittmFusion::kAdd;      // Released: "residual".
  VittmOutput output = VittmOutput::kMemoryHead;
  int64_t num_classes = 1000;
};

// Read/write head interface: (input tokens [B,N,C], query tokens [B,M,C]) → [B,M,C].
class VittmRwHeadImpl : public torch::nn::Module {
 public:
  virtual at::Tensor forward(const at::Tensor& input, const at::Tensor& query) = 0;
};

// The read and write heads and fusion of one configuration, for tests.
std::shared_ptr<VittmRwHeadImpl> MakeVittmRwHead(VittmRwHead type, int64_t dim, int64_t heads,
                                                 int64_t latent_size, int64_t target_tokens);
// The add-erase fusion's parameters (child `linear`: dim → one gate per target token).
std::shared_ptr<torch::nn::Module> MakeVittmAddEraseGate(int64_t dim, int64_t target_tokens);
// fused = fuse(rw, target); `gate` is MakeVittmAddEraseGate's module for kAddErase (else null).
at::Tensor VittmFuse(VittmFusion fusion, const at::Tensor& rw, const at::Tensor& target,
                     torch::nn::Module* gate);

// The model; also returns both heads' logits through ForwardHeads().
class VittmModel : public VisionModel {
 public:
  // {memory-head logits, process-head logits}.
  virtual std::pair<at::Tensor, at::Tensor> ForwardHeads(const at::Tensor& images) = 0;
  // {memory tokens, process tokens} after the last layer and final norms.
  virtual std::pair<at::Tensor, at::Tensor> ForwardFeatures(const at::Tensor& images) = 0;
};

// Throws c10::Error on an inconsistent config.
std::shared_ptr<VittmModel> MakeVittm(const VittmConfig& config);

}  // namespace vitserve
