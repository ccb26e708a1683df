// TokenLearner (Ryoo et al., arXiv 2106.11297) in a ViT, laid out as scenic's
// `projects/token_learner/model.py` computes it, with timm-like PyTorch names:
//   TokenLearnerV11 (Sec. 3, "v1.1" of the code): LayerNorm → MLP C→bottleneck→S (GELU) →
//     softmax over the HW positions → S tokens = weights · (un-normalised input).
//   TokenFuser (Sec. 4): LayerNorm → Linear over the token axis → LayerNorm, then each of the HW
//     original positions mixes the S tokens with sigmoid(MLP(LayerNorm(original))) gates.
//   TokenLearnerVit: patch_embed (no class token) + pos_embed → blocks; before block
//     `tokenlearner_loc` (0-based) the HW tokens become S learned tokens (EncoderMod), or, with
//     the fuser, every block from that index on runs as TL → block → fuser + residual
//     (EncoderModFuser); → norm → global average pool → head.
// Scenic's shipped ImageNet config (configs/im1k_token_learner_config.py): ViT-B/16, S = 16,
// tokenlearner_loc = 9, v1.1, no fuser, 'gap' classifier, no representation layer. Flax's nn.gelu
// is the tanh approximation; `tanh_gelu` (default true) applies it in the blocks and modules.
// The Flax → PyTorch name mapping is in docs/zoo3.md.
// Ownership/thread-safety/errors: see vision_model.h; forward() needs img_size × img_size input.
#pragma once

#include <ATen/ATen.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>

#include <cstdint>
#include <memory>

#include "models/layers/vit_layers.h"
#include "models/vision_model.h"
#include "models/layers/layer_norm.h"
#include "models/layers/linear.h"

namespace vitserve {

// TokenLearner v1.1: [B, N, C] → [B, S, C]. Children: norm, mlp.fc1, mlp.fc2.
class TokenLearnerV11Impl : public torch::nn::Module {
 public:
  TokenLearnerV11Impl(int64_t dim, int64_t num_tokens, int64_t bottleneck = 64,
                      bool tanh_gelu = true, double eps = vit_layers::kLayerNormEps);
  at::Tensor forward(const at::Tensor& x);
  // The softmax selection weights [B, S, N] (for tests and visualisation).
  at::Tensor SelectionWeights(const at::Tensor& x);

 private:
  layers::LayerNorm norm_;
  vit_layers::Mlp mlp_;
};
TORCH_MODULE(TokenLearnerV11);

// TokenFuser: (tokens [B,S,C], original [B,N,C]) → [B,N,C]; the caller adds the residual.
// Children: mix_norm1, mix (Linear S→S over the token axis), mix_norm2, norm, mlp.fc1, mlp.fc2.
class TokenFuserImpl : public torch::nn::Module {
 public:
  TokenFuserImpl(int64_t dim, int64_t num_tokens, int64_t bottleneck = 64, bool tanh_gelu = true);
  at::Tensor forward(const at::Tensor& tokens, const at::Tensor& original);

 private:
  layers::LayerNorm mix_norm1_;
  layers::Linear mix_;
  layers::LayerNorm mix_norm2_;
  layers::LayerNorm norm_;
  vit_layers::Mlp mlp_;
};
TORCH_MODULE(TokenFuser);

struct TokenLearnerVitConfig {
  int64_t img_size = 224;
  int64_t patch_size = 16;
  int64_t embed_dim = 768;
  int64_t depth = 12;
  int64_t num_heads = 12;
  int64_t mlp_ratio = 4;
  int64_t num_tokens = 16;       // S.
  int64_t tokenlearner_loc = 9;  // 0-based block index the TokenLearner runs before.
  int64_t bottleneck = 64;
  bool use_fuser = false;
  bool tanh_gelu = true;
  int64_t num_classes = 1000;
};

// Throws c10::Error on an inconsistent config (loc outside [0, depth), sizes not divisible).
std::shared_ptr<VisionModel> MakeTokenLearnerVit(const TokenLearnerVitConfig& config);

}  // namespace vitserve
