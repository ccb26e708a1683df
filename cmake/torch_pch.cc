// The translation unit that owns the shared LibTorch precompiled header (VitserveTargets.cmake).
// Nothing is defined here; the target exists so the other targets can reuse its PCH.
