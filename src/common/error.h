// The library's exception type and the helpers that raise it. Every C entry point
// catches it (api.cpp) and turns it into a status code plus the thread-local message.
#ifndef PACKKV_ERROR_H
#define PACKKV_ERROR_H

#include <stdexcept>
#include <string>

#include "packkv/packkv.h"

namespace packkv {

class Error : public std::runtime_error {
 public:
  Error(packkv_status_t code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  packkv_status_t code() const noexcept { return code_; }

 private:
  packkv_status_t code_;
};

[[noreturn]] inline void fail(packkv_status_t code, const std::string& message) {
  throw Error(code, message);
}

inline void require(bool ok, const std::string& message) {
  if (!ok) fail(PACKKV_ERR_INVALID_ARGUMENT, message);
}

}  // namespace packkv

#endif  // PACKKV_ERROR_H
