# Use ccache when present. CCACHE_BASEDIR makes hits survive a fresh clone in another
# directory; the sloppiness settings are what precompiled headers need to be cached. The locale
# variables are unset because ccache hashes them (they change the compiler's messages): a build
# from a shell with LANG set and one from an environment without it (`env -i scripts/test.sh` in
# a fresh clone) found none of each other's objects in the cache.
find_program(VITSERVE_CCACHE ccache)
if(VITSERVE_CCACHE)
  set(_vitserve_ccache_env
      --unset=LANG --unset=LC_ALL --unset=LC_CTYPE --unset=LC_MESSAGES
      CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}
      CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      CCACHE_NOHASHDIR=true)
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env ${_vitserve_ccache_env} ${VITSERVE_CCACHE})
  set(CMAKE_CUDA_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env ${_vitserve_ccache_env} ${VITSERVE_CCACHE})
endif()
