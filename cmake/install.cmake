# Install rules and package files for libpackkv (included by the top-level CMakeLists.txt).
#
# Lays out (GNUInstallDirs, relative to the install prefix):
#   include/packkv/packkv.h, packkv_experimental.h
#   lib/libpackkv.so.X.Y.Z, lib/libpackkv.so.X (SONAME), lib/libpackkv.so
#   lib/libpackkv.a                             (when PACKKV_BUILD_STATIC=ON)
#   lib/cmake/packkv/packkvConfig.cmake, packkvConfigVersion.cmake (SameMajorVersion),
#   lib/cmake/packkv/packkvTargets*.cmake       (targets packkv::packkv [, packkv::packkv_static])
#   lib/pkgconfig/packkv.pc                     (relocatable: paths relative to ${pcfiledir})
# and exports the same targets from the build tree (packkvConfig.cmake in the build directory),
# so a consumer can point CMAKE_PREFIX_PATH / packkv_DIR at either.
#
# PACKKV_INSTALL (default: on when packkv is the top-level project) turns all of this off, e.g.
# when the Python binding embeds the library with add_subdirectory().

option(PACKKV_INSTALL "Generate install rules and package files for libpackkv" ${PROJECT_IS_TOP_LEVEL})
if(NOT PACKKV_INSTALL)
  return()
endif()

include(CMakePackageConfigHelpers)

set(PACKKV_INSTALL_CMAKEDIR "${CMAKE_INSTALL_LIBDIR}/cmake/packkv"
    CACHE STRING "Install directory of packkvConfig.cmake, relative to the prefix")
set(PACKKV_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig"
    CACHE STRING "Install directory of packkv.pc, relative to the prefix")

# ---- headers -------------------------------------------------------------------------------------
set(_packkv_public_headers
  "${PROJECT_SOURCE_DIR}/include/packkv/packkv.h"
  "${PROJECT_SOURCE_DIR}/include/packkv/packkv_experimental.h")
install(FILES ${_packkv_public_headers}
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/packkv" COMPONENT packkv_development)

# ---- libraries -----------------------------------------------------------------------------------
set(_packkv_install_targets packkv)
set(PACKKV_CONFIG_HAS_STATIC OFF)
if(TARGET packkv_static)
  list(APPEND _packkv_install_targets packkv_static)
  set(PACKKV_CONFIG_HAS_STATIC ON)
  set_target_properties(packkv_static PROPERTIES EXPORT_NAME packkv_static)
endif()
set_target_properties(packkv PROPERTIES EXPORT_NAME packkv)

install(TARGETS ${_packkv_install_targets}
  EXPORT packkvTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT packkv_runtime
          NAMELINK_COMPONENT packkv_development
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT packkv_development
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT packkv_runtime
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")

install(EXPORT packkvTargets
  NAMESPACE packkv::
  DESTINATION "${PACKKV_INSTALL_CMAKEDIR}"
  COMPONENT packkv_development)
# The same targets, usable straight from the build tree.
export(EXPORT packkvTargets NAMESPACE packkv:: FILE "${PROJECT_BINARY_DIR}/packkvTargets.cmake")

# ---- packkvConfig.cmake + version file -----------------------------------------------------------
# The static library carries the CUDA runtime and threads as link dependencies; the shared one
# hides them (cudart is linked statically into it), so consumers of packkv::packkv need nothing.
set(PACKKV_CONFIG_NEEDS_CUDA OFF)
if(PACKKV_CONFIG_HAS_STATIC AND PACKKV_HAS_CUDA_BACKEND)
  set(PACKKV_CONFIG_NEEDS_CUDA ON)
endif()
set(PACKKV_CONFIG_CUDA_BACKEND ${PACKKV_HAS_CUDA_BACKEND})
if(NOT PACKKV_CONFIG_CUDA_BACKEND)
  set(PACKKV_CONFIG_CUDA_BACKEND OFF)
endif()

configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/packkvConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/cmake/install/packkvConfig.cmake"
  INSTALL_DESTINATION "${PACKKV_INSTALL_CMAKEDIR}")
# Build-tree flavour: same template, prefix = the build directory.
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/packkvConfig.cmake.in"
  "${PROJECT_BINARY_DIR}/packkvConfig.cmake"
  INSTALL_DESTINATION "${PROJECT_BINARY_DIR}"
  INSTALL_PREFIX "${PROJECT_BINARY_DIR}")
write_basic_package_version_file(
  "${PROJECT_BINARY_DIR}/packkvConfigVersion.cmake"
  VERSION ${PROJECT_VERSION}
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${PROJECT_BINARY_DIR}/cmake/install/packkvConfig.cmake"
  "${PROJECT_BINARY_DIR}/packkvConfigVersion.cmake"
  DESTINATION "${PACKKV_INSTALL_CMAKEDIR}"
  COMPONENT packkv_development)

# ---- packkv.pc -----------------------------------------------------------------------------------
# Relocatable: the prefix is computed from ${pcfiledir}, so the tree can be moved or installed
# with `cmake --install <build> --prefix <anywhere>`. Absolute GNUInstallDirs values are kept
# as they are.
function(_packkv_pc_path out_var dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out_var} "${dir}" PARENT_SCOPE)
  else()
    set(${out_var} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()
if(IS_ABSOLUTE "${PACKKV_INSTALL_PKGCONFIGDIR}")
  set(PACKKV_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # e.g. lib/pkgconfig -> ../..; lib/x86_64-linux-gnu/pkgconfig -> ../../..
  file(RELATIVE_PATH _packkv_pc_up "/packkv_root/${PACKKV_INSTALL_PKGCONFIGDIR}" "/packkv_root")
  string(REGEX REPLACE "/$" "" _packkv_pc_up "${_packkv_pc_up}")
  set(PACKKV_PC_PREFIX "\${pcfiledir}/${_packkv_pc_up}")
endif()
_packkv_pc_path(PACKKV_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
_packkv_pc_path(PACKKV_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
# Libs.private: what a static link of libpackkv.a needs besides libpackkv itself; written only
# when libpackkv.a is installed (PACKKV_BUILD_STATIC=ON), so that the file never names a
# library that is not there.
set(PACKKV_PC_LIBS_PRIVATE_LINE "")
if(TARGET packkv_static)
  set(_packkv_private "-lrt -lpthread -ldl -lstdc++ -lm")
  if(PACKKV_HAS_CUDA_BACKEND)
    set(_packkv_private "-L${CUDAToolkit_LIBRARY_DIR} -lcudart_static ${_packkv_private}")
  endif()
  set(PACKKV_PC_LIBS_PRIVATE_LINE "Libs.private: ${_packkv_private}")
endif()
configure_file("${CMAKE_CURRENT_LIST_DIR}/packkv.pc.in"
               "${PROJECT_BINARY_DIR}/cmake/install/packkv.pc" @ONLY)
install(FILES "${PROJECT_BINARY_DIR}/cmake/install/packkv.pc"
        DESTINATION "${PACKKV_INSTALL_PKGCONFIGDIR}" COMPONENT packkv_development)
