"""Makes the CMake config of PyPI's torch wheel (a CUDA build) describe a CPU-only LibTorch.

Used by docker/Dockerfile.cpu's builder stage only: PyPI has no CPU build of torch==2.11.0
(PyTorch's own CPU index is not always reachable), and the CUDA wheel's CMake config
 1. requires a CUDA toolkit (Caffe2Config.cmake includes public/cuda.cmake, which fails
    without nvcc and the CUDA headers), and
 2. links every consumer of the `torch` target to libtorch.so, whose DT_NEEDED includes
    libtorch_cuda.so, and through it cuBLAS, cuDNN, NCCL, ... (about 3 GB).
After this edit `torch` means libtorch_cpu.so + libc10.so, so vitserve links no CUDA library
of its own. libtorch_cpu.so itself still needs libcudart.so.13 and libcupti.so.13 (kineto's
profiler), 5 MB together, which the image carries. Each edit must match exactly once: a new
wheel with another layout fails the build here instead of producing a binary that needs CUDA.

    python3 libtorch_cpu_only.py <site-packages>/torch
"""
import pathlib
import sys

EDITS = {
    # 1. skip the CUDA toolkit lookup (and its "cannot find the CUDA libraries" error).
    "share/cmake/Caffe2/Caffe2Config.cmake": [
        ("if(ON)\n  # The file public/cuda.cmake exclusively uses CAFFE2_USE_*.",
         "if(OFF)  # vitserve CPU image: no CUDA toolkit\n"
         "  # The file public/cuda.cmake exclusively uses CAFFE2_USE_*."),
    ],
    # 2. `torch` no longer drags torch_cuda (and CUDA::* targets that do not exist now) along.
    "share/cmake/Caffe2/Caffe2Targets.cmake": [
        ('INTERFACE_LINK_LIBRARIES "torch_cpu_library;torch_cuda_library"',
         'INTERFACE_LINK_LIBRARIES "torch_cpu_library"'),
    ],
    # 3. ... and is libtorch_cpu.so itself rather than libtorch.so (NEEDED: libtorch_cuda.so).
    "share/cmake/Caffe2/Caffe2Targets-release.cmake": [
        ('IMPORTED_LOCATION_RELEASE "${_IMPORT_PREFIX}/lib/libtorch.so"\n'
         '  IMPORTED_SONAME_RELEASE "libtorch.so"',
         'IMPORTED_LOCATION_RELEASE "${_IMPORT_PREFIX}/lib/libtorch_cpu.so"\n'
         '  IMPORTED_SONAME_RELEASE "libtorch_cpu.so"'),
    ],
    # 4. TORCH_LIBRARIES: no c10_cuda / nvrtc.
    "share/cmake/Torch/TorchConfig.cmake": [
        ("if(ON)\n  if(MSVC)\n    find_library(CAFFE2_NVRTC_LIBRARY",
         "if(OFF)  # vitserve CPU image\n  if(MSVC)\n    find_library(CAFFE2_NVRTC_LIBRARY"),
    ],
}


def main(torch_dir):
    root = pathlib.Path(torch_dir)
    for rel, edits in EDITS.items():
        path = root / rel
        text = path.read_text()
        for old, new in edits:
            count = text.count(old)
            if count != 1:
                sys.exit(f"{path}: expected 1 match of {old!r}, found {count}; "
                         "the torch wheel changed, update docker/libtorch_cpu_only.py")
            text = text.replace(old, new)
        path.write_text(text)
        print(f"edited {path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
