# Driver for the install_consumer test (cmake -P). Every step runs in WORK_DIR, which is wiped first.

foreach(var POSTTRAIN_SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_install_test.cmake: ${var} is not set")
  endif()
endforeach()

set(here ${CMAKE_CURRENT_LIST_DIR})
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "install test: step '${name}' failed (${rc})\n${out}\n${err}")
  endif()
  message(STATUS "install test: ${name}: ok")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(common -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_BUILD_TYPE=Release)

# 1. Install from a fresh configure with everything optional off.
step("configure posttrain" ${CMAKE_COMMAND} -S ${POSTTRAIN_SOURCE_DIR} -B ${WORK_DIR}/posttrain-build ${common}
     -DCMAKE_INSTALL_PREFIX=${prefix} -DPOSTTRAIN_BUILD_TESTS=OFF -DPOSTTRAIN_BUILD_BENCHMARKS=OFF
     -DPOSTTRAIN_BUILD_EXAMPLES=OFF -DPOSTTRAIN_ENABLE_CUDA=OFF)
step("install posttrain" ${CMAKE_COMMAND} --install ${WORK_DIR}/posttrain-build)
foreach(f include/posttrain/posttrain.hpp include/posttrain/adapt/eigen.hpp)
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "install test: ${f} was not installed")
  endif()
endforeach()

# 2. find_package against the installed copy only (no package registry, no source tree).
step("configure find_package consumer" ${CMAKE_COMMAND} -S ${here}/consumer -B ${WORK_DIR}/consumer-build ${common}
     -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
string(FIND "${step_output}" "posttrain_DIR=${prefix}/" found_at)
if(found_at EQUAL -1)
  message(FATAL_ERROR "install test: the consumer did not find posttrain in ${prefix}:\n${step_output}")
endif()
step("build find_package consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/consumer-build)
step("run find_package consumer" ${WORK_DIR}/consumer-build/posttrain_consumer)

# 3. add_subdirectory of the source tree: tests, benchmarks and examples must default to off.
step("configure add_subdirectory consumer" ${CMAKE_COMMAND} -S ${here}/consumer_subdir -B ${WORK_DIR}/subdir-build
     ${common} -DPOSTTRAIN_SOURCE_DIR=${POSTTRAIN_SOURCE_DIR})
step("build add_subdirectory consumer" ${CMAKE_COMMAND} --build ${WORK_DIR}/subdir-build)
step("run add_subdirectory consumer" ${WORK_DIR}/subdir-build/posttrain_consumer_subdir)

message(STATUS "install test: passed")
