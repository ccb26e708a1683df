# OpenCV core, imgproc and imgcodecs, found from Debian's per-module -dev packages
# (libopencv-{core,imgproc,imgcodecs}-dev) without OpenCVConfig.cmake.
#
# Why not find_package(OpenCV): Debian ships OpenCVConfig.cmake only in libopencv-dev, which
# depends on every OpenCV module (contrib, dnn, viz with VTK, videoio with FFmpeg/GStreamer, ...):
# 212 packages and 149 MB to download on a fresh Debian 12 against 58 packages and 37 MB for the
# three modules we use. The per-module packages carry the headers and the .so links, which is
# all a build needs, so the targets are defined here with the names OpenCVConfig.cmake gives them.
set(_vitserve_opencv_modules core imgproc imgcodecs)
find_path(VITSERVE_OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4
          DOC "OpenCV 4 headers (libopencv-core-dev)")
# cvconfig.h and friends sit in the multiarch include directory on Debian.
find_path(VITSERVE_OPENCV_ARCH_INCLUDE_DIR opencv2/cvconfig.h
          PATH_SUFFIXES ${CMAKE_LIBRARY_ARCHITECTURE}/opencv4 opencv4
          DOC "OpenCV 4 architecture-specific headers (libopencv-core-dev)")
set(_vitserve_opencv_missing "")
if(NOT VITSERVE_OPENCV_INCLUDE_DIR OR NOT VITSERVE_OPENCV_ARCH_INCLUDE_DIR)
  list(APPEND _vitserve_opencv_missing libopencv-core-dev)
endif()
foreach(_module ${_vitserve_opencv_modules})
  string(TOUPPER ${_module} _upper)
  find_library(VITSERVE_OPENCV_${_upper}_LIBRARY opencv_${_module}
               DOC "OpenCV ${_module} (libopencv-${_module}-dev)")
  if(NOT VITSERVE_OPENCV_${_upper}_LIBRARY)
    list(APPEND _vitserve_opencv_missing libopencv-${_module}-dev)
  endif()
endforeach()
if(_vitserve_opencv_missing)
  list(REMOVE_DUPLICATES _vitserve_opencv_missing)
  message(FATAL_ERROR "OpenCV modules not found; on Debian 12 install: ${_vitserve_opencv_missing} "
                      "(scripts/setup.sh does)")
endif()
foreach(_module ${_vitserve_opencv_modules})
  string(TOUPPER ${_module} _upper)
  if(NOT TARGET opencv_${_module})
    add_library(opencv_${_module} SHARED IMPORTED)
    set_target_properties(opencv_${_module} PROPERTIES
      IMPORTED_LOCATION "${VITSERVE_OPENCV_${_upper}_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${VITSERVE_OPENCV_INCLUDE_DIR};${VITSERVE_OPENCV_ARCH_INCLUDE_DIR}")
  endif()
endforeach()
# imgproc and imgcodecs are built on core; imgcodecs also on imgproc.
set_property(TARGET opencv_imgproc APPEND PROPERTY INTERFACE_LINK_LIBRARIES opencv_core)
set_property(TARGET opencv_imgcodecs APPEND PROPERTY INTERFACE_LINK_LIBRARIES opencv_imgproc opencv_core)
message(STATUS "vitserve: OpenCV modules ${_vitserve_opencv_modules} from ${VITSERVE_OPENCV_INCLUDE_DIR}")
