# CTest helper: every program of the project answers --help (exit status 0, a usage text
# on stdout) instead of running, dlopen-ing "--help" or ignoring it (issue 18 item 7).
#   cmake -DPROGRAMS="prog1;prog2;..." -P check_help.cmake
# A program given as "bash;script.sh" is a shell script (the ';' is written as '|').
foreach(_p IN LISTS PROGRAMS)
  string(REPLACE "|" ";" _cmd "${_p}")
  execute_process(COMMAND ${_cmd} --help RESULT_VARIABLE _rc OUTPUT_VARIABLE _out ERROR_VARIABLE _err
                  TIMEOUT 60)
  if(NOT _rc EQUAL 0)
    message(FATAL_ERROR "${_cmd} --help exited with ${_rc}:\n${_out}${_err}")
  endif()
  string(TOLOWER "${_out}" _low)
  if(NOT _low MATCHES "usage")
    message(FATAL_ERROR "${_cmd} --help printed no usage text:\n${_out}${_err}")
  endif()
  message(STATUS "${_cmd} --help: ok")
endforeach()
