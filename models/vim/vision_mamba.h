// Vision Mamba, Vim (Zhu et al., arXiv 2401.09417; official code hustvl/Vim, models_mamba.py and
// mamba-1p1p1/mamba_ssm/modules/mamba_simple.py), laid out exactly as the released models
// (`vim_{tiny,small}_patch16_224_bimambav2_final_pool_mean_abs_pos_embed_with_midclstok_div2`)
// so an official checkpoint converted to safetensors loads by name:
//   patch_embed.proj (16×16 conv, stride 16) → M patch tokens; cls_token inserted at index M/2
//   (Sec. 3.2, "middle class token"); + pos_embed (learned, absolute)
//   → layers.i (24): residual = residual + hidden (fp32), hidden = mixer(norm(residual))
//     (Block with fused_add_norm and residual_in_fp32; norm = RMSNorm, ε = 1e-5, weight only)
//   → norm_f(residual + hidden) → head(token M/2).
// final_pool_type 'mean' of the released configs is dead code there: with a class token the
// official forward_features returns the class-token position, as here.
// Mixer ("bimamba v2", Alg. 1): in_proj (no bias) → x, z. Forward branch: conv1d (depthwise,
// causal, kernel 4, bias) → SiLU → x_proj → [dt | B | C]; Δ = softplus(dt_proj(dt)),
// A = −exp(A_log); selective scan gated by SiLU(z) (selective_scan.h). Backward branch: the same
// with conv1d_b, x_proj_b, dt_proj_b, A_b_log, D_b over the reversed sequence (x and z), its
// output reversed back. out_proj((y_f + y_b) / 2) (if_divide_out=True; out_proj has no bias).
// Other input sizes: the position embedding of the patch grid is resampled (bicubic with
// antialiasing, as timm's resample_abs_pos_embed) to the new grid, the class token's own
// embedding is kept and the class token goes to the new middle, N/2 for N patch tokens.
// Precision: the residual stream stays fp32 whatever the module dtype; the scan keeps its state
// in fp32. No BatchNorm, so FuseForInference() is the default no-op.
// Ownership/thread-safety/errors: see vision_model.h; forward() takes any H, W ≥ patch size
// (the patch conv floors partial patches, as the official PatchEmbed does).
#pragma once

#include <cstdint>
#include <memory>

#include "models/vision_model.h"

namespace vitserve {

struct VimConfig {
  int64_t img_size = 224;  // The size pos_embed is laid out for (14×14 patches at 224).
  int64_t patch_size = 16;
  int64_t embed_dim = 192;
  int64_t depth = 24;
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t expand = 2;
  int64_t dt_rank = 0;  // 0: ceil(embed_dim / 16), Mamba's "auto".
  double norm_eps = 1e-5;
  int64_t num_classes = 1000;
};

// A randomly initialised Vim, initialised as the official code does (Mamba's S4D-real A_log,
// D = 1, dt_proj bias = softplus⁻¹ of log-uniform Δ in [1e-3, 1e-1]; out_proj rescaled by
// 1/sqrt(depth); trunc-normal 0.02 position embedding, class token and head; LeCun-normal patch
// conv). Throws c10::Error on an inconsistent config.
std::shared_ptr<VisionModel> MakeVisionMamba(const VimConfig& config);

}  // namespace vitserve
