# install_tree_test.cmake: CTest driver for the install-tree checks (cmake -P).
#
#   MODE=install         rm -rf PREFIX; cmake --install BUILD_DIR --prefix PREFIX; check the layout:
#                        header, libpackkv.so.X.Y.Z + SONAME link libpackkv.so.X + dev link,
#                        packkvConfig.cmake, packkvConfigVersion.cmake, packkvTargets.cmake,
#                        packkv.pc (and that `pkg-config --modversion` reads it)
#   MODE=consumer_cmake  configure/build examples/consumer against PREFIX (find_package), run it
#   MODE=c_pkgconfig     compile examples/c_minimal.c with `pkg-config --cflags --libs packkv`, run it
#   MODE=engine_dlopen   compile examples/engine_dlopen.cpp against PREFIX/include, run it with
#                        LD_LIBRARY_PATH=PREFIX/LIBDIR so dlopen() finds the SONAME there
# Variables: PREFIX BUILD_DIR SOURCE_DIR LIBDIR VERSION VERSION_MAJOR C_COMPILER CXX_COMPILER
#            PKG_CONFIG DL_LIBS GENERATOR
cmake_minimum_required(VERSION 3.24)

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  message(STATUS "$ ${ARGN}\n${out}${err}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "command failed (${rc}): ${ARGN}")
  endif()
  set(RUN_OUTPUT "${out}" PARENT_SCOPE)
endfunction()

function(require_file path)
  if(NOT EXISTS "${path}")
    message(FATAL_ERROR "missing from the install tree: ${path}")
  endif()
endfunction()

set(_lib "${PREFIX}/${LIBDIR}")
set(_work "${BUILD_DIR}/install-test-work")

if(MODE STREQUAL "install")
  file(REMOVE_RECURSE "${PREFIX}" "${_work}")
  run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${PREFIX}")
  require_file("${PREFIX}/include/packkv/packkv.h")
  require_file("${PREFIX}/include/packkv/packkv_experimental.h")
  require_file("${_lib}/libpackkv.so.${VERSION}")
  require_file("${_lib}/libpackkv.so.${VERSION_MAJOR}")
  require_file("${_lib}/libpackkv.so")
  require_file("${_lib}/cmake/packkv/packkvConfig.cmake")
  require_file("${_lib}/cmake/packkv/packkvConfigVersion.cmake")
  require_file("${_lib}/cmake/packkv/packkvTargets.cmake")
  require_file("${_lib}/pkgconfig/packkv.pc")
  # The SONAME recorded in the library must be libpackkv.so.MAJOR.
  find_program(_objdump objdump)
  if(_objdump)
    run(${_objdump} -p "${_lib}/libpackkv.so.${VERSION}")
    if(NOT RUN_OUTPUT MATCHES "SONAME +libpackkv\\.so\\.${VERSION_MAJOR}\n")
      message(FATAL_ERROR "SONAME of libpackkv.so.${VERSION} is not libpackkv.so.${VERSION_MAJOR}")
    endif()
  endif()
  if(PKG_CONFIG)
    set(ENV{PKG_CONFIG_PATH} "${_lib}/pkgconfig")
    run(${PKG_CONFIG} --modversion packkv)
    string(STRIP "${RUN_OUTPUT}" _v)
    if(NOT _v STREQUAL VERSION)
      message(FATAL_ERROR "pkg-config reports version '${_v}', expected ${VERSION}")
    endif()
  endif()
  # Libs.private may only name what a static link needs, and only if libpackkv.a is installed.
  file(READ "${_lib}/pkgconfig/packkv.pc" _pc)
  if(_pc MATCHES "\nLibs.private:" AND NOT EXISTS "${_lib}/libpackkv.a")
    message(FATAL_ERROR "packkv.pc has Libs.private but libpackkv.a is not installed:\n${_pc}")
  endif()

elseif(MODE STREQUAL "consumer_cmake")
  set(_b "${_work}/consumer")
  file(REMOVE_RECURSE "${_b}")
  run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/consumer" -B "${_b}" -G "${GENERATOR}"
      "-DCMAKE_PREFIX_PATH=${PREFIX}" "-DCMAKE_C_COMPILER=${C_COMPILER}")
  # The package must come from the install tree, not from the build tree's export.
  file(READ "${_b}/CMakeCache.txt" _cache)
  string(REGEX MATCH "packkv_DIR:PATH=([^\n]*)" _m "${_cache}")
  if(NOT CMAKE_MATCH_1 STREQUAL "${_lib}/cmake/packkv")
    message(FATAL_ERROR "packkv_DIR is '${CMAKE_MATCH_1}', expected ${_lib}/cmake/packkv")
  endif()
  run(${CMAKE_COMMAND} --build "${_b}")
  run("${_b}/packkv_consumer")

elseif(MODE STREQUAL "c_pkgconfig")
  if(NOT PKG_CONFIG)
    message(FATAL_ERROR "pkg-config not found")
  endif()
  set(ENV{PKG_CONFIG_PATH} "${_lib}/pkgconfig")
  run(${PKG_CONFIG} --cflags --libs packkv)
  separate_arguments(_flags UNIX_COMMAND "${RUN_OUTPUT}")
  file(MAKE_DIRECTORY "${_work}")
  # Only the flags of packkv.pc: its rpath must let the program find libpackkv.so.0.
  run(${C_COMPILER} -std=c99 -Wall -Wextra -Werror "${SOURCE_DIR}/examples/c_minimal.c" ${_flags}
      -lm -o "${_work}/c_minimal_pc")
  run(${CMAKE_COMMAND} -E env --unset=LD_LIBRARY_PATH "${_work}/c_minimal_pc")

elseif(MODE STREQUAL "go_pkgconfig")
  # examples/go built with cgo against the installed packkv.pc (the README's commands), run
  # without LD_LIBRARY_PATH.
  if(NOT PKG_CONFIG OR NOT GO)
    message(FATAL_ERROR "go and pkg-config are needed")
  endif()
  file(MAKE_DIRECTORY "${_work}")
  set(ENV{PKG_CONFIG_PATH} "${_lib}/pkgconfig")
  set(ENV{CGO_ENABLED} 1)
  set(ENV{GOFLAGS} "-mod=mod -buildvcs=false")
  set(ENV{GOPROXY} off)
  set(ENV{GOTOOLCHAIN} local)
  if("$ENV{HOME}" STREQUAL "" AND "$ENV{GOCACHE}" STREQUAL "")
    set(ENV{GOCACHE} "${_work}/go-cache")
  endif()
  unset(ENV{LD_LIBRARY_PATH})
  execute_process(COMMAND ${GO} build -o "${_work}/go_example" .
                  WORKING_DIRECTORY "${SOURCE_DIR}/examples/go" RESULT_VARIABLE _rc)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "go build of examples/go failed (${_rc})")
  endif()
  run("${_work}/go_example" "${SOURCE_DIR}/data/smollm2_kv_sample.safetensors")

elseif(MODE STREQUAL "engine_dlopen")
  file(MAKE_DIRECTORY "${_work}")
  set(_dl)
  foreach(_l IN LISTS DL_LIBS)  # CMAKE_DL_LIBS holds library names ("dl")
    list(APPEND _dl "-l${_l}")
  endforeach()
  run(${CXX_COMPILER} -std=c++17 -Wall -Wextra "${SOURCE_DIR}/examples/engine_dlopen.cpp"
      "-I${PREFIX}/include" ${_dl} -o "${_work}/engine_dlopen")
  # No path argument: the loader must find libpackkv.so.MAJOR by its SONAME.
  run(${CMAKE_COMMAND} -E env "LD_LIBRARY_PATH=${_lib}" "${_work}/engine_dlopen")

else()
  message(FATAL_ERROR "unknown MODE '${MODE}'")
endif()
