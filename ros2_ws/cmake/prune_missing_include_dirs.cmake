# Injected with -DCMAKE_PROJECT_INCLUDE= when building against the ROS 2 PyPI wheels.
# Their exported CMake targets list include dirs of the machine they were built on
# (/opt/python/cp311-cp311/...); CMake refuses to generate while an imported target names
# a missing directory. This drops such entries from every imported target, once all
# find_package() calls are done. A real ROS install never needs it.

function(_fusion_prune_missing_include_dirs)
  get_property(_dirs DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _dirs)
    get_target_property(_includes ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _includes)
      continue()
    endif()
    set(_kept "")
    foreach(_dir IN LISTS _includes)
      if(_dir MATCHES "^/opt/python/" AND NOT EXISTS "${_dir}")
        continue()
      endif()
      list(APPEND _kept "${_dir}")
    endforeach()
    set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
  endforeach()
endfunction()

# Run at the end of the top-level directory's configure step, after every find_package().
cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _fusion_prune_missing_include_dirs)
