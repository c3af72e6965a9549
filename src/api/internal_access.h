// Access from tests and tools (linked against packkv_internal) to the backend object
// behind an opaque packkv_cache_t. Not part of the public API.
#ifndef PACKKV_INTERNAL_ACCESS_H
#define PACKKV_INTERNAL_ACCESS_H

#include "api/cache_impl.h"
#include "packkv/packkv.h"

namespace packkv {
const CacheImpl& internal_impl(const packkv_cache_t* cache);
}

#endif
