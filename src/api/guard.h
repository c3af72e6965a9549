// The exception firewall of the C entry points (PACKKV_API_BEGIN / END, docs/API-CONVENTIONS.md
// R4) and the thread-local last error they fill. Shared by api.cpp and api_experimental.cpp.
#ifndef PACKKV_API_GUARD_H
#define PACKKV_API_GUARD_H

#include <new>
#include <stdexcept>
#include <string>

#include "common/error.h"
#include "packkv/packkv.h"
#include "pool/page_pool.h"

namespace packkv {

// The calling thread's last error message.
inline std::string& last_error() {
  static thread_local std::string message;
  return message;
}

inline packkv_status_t set_error(packkv_status_t code, const std::string& message) {
  last_error() = message;
  return code;
}

}  // namespace packkv

// Every status-returning entry point: clears the last error (and the budget record of
// pool/page_pool.h), maps exceptions to statuses. fn names the function.
#define PACKKV_API_BEGIN           \
  packkv::last_error().clear();    \
  packkv::last_bytes_needed() = 0; \
  try {
#define PACKKV_API_END(fn)                                                                           \
  }                                                                                                  \
  catch (const packkv::Error& e) {                                                                   \
    return packkv::set_error(e.code(), e.what());                                                    \
  }                                                                                                  \
  catch (const std::bad_alloc&) {                                                                    \
    return packkv::set_error(PACKKV_ERR_OUT_OF_HOST_MEMORY, std::string(fn) + ": out of host memory"); \
  }                                                                                                  \
  catch (const std::exception& e) {                                                                  \
    return packkv::set_error(PACKKV_ERR_INTERNAL, std::string(fn) + ": internal error: " + e.what()); \
  }                                                                                                  \
  catch (...) {                                                                                      \
    return packkv::set_error(PACKKV_ERR_INTERNAL, std::string(fn) + ": internal error");            \
  }                                                                                                  \
  return PACKKV_OK;

#endif  // PACKKV_API_GUARD_H
