/*
 * libpackkv: the experimental part of the C API -- declarations that are NOT yet frozen.
 *
 * Policy (modelled on zstd's ZSTD_STATIC_LINKING_ONLY section)
 *   - Everything in packkv.h is frozen: it keeps its meaning and ABI for the whole
 *     major version (the SONAME).
 *   - Everything here may change or disappear in ANY release, minor and patch ones
 *     included, without a deprecation period. Code that uses it must be rebuilt against
 *     the exact libpackkv version it runs with (check packkv_version_number() against
 *     PACKKV_VERSION_NUMBER at start-up, or link libpackkv statically).
 *   - To use it, define PACKKV_EXPERIMENTAL_API before including this header: the
 *     opt-in makes every use visible in the caller's source. Without it, this header
 *     stops the build with an error.
 *   - The language bindings (Python, Rust, Go) wrap packkv.h only.
 *   - A declaration moves from here to packkv.h (unchanged, or changed once more) when it
 *     is frozen; this header then keeps nothing for it.
 *   - Plain C99, like packkv.h; installed next to it; compiled as strict C99 by the
 *     header check of the test suite.
 *
 * Contents (this version)
 *   - packkv_format_id_t: the identifiers of the compressed block formats. Only one
 *     format exists today (every cache uses it); a second one (a tile layout made for
 *     tensor-core decoding) is planned, and with it a way to choose one at cache creation.
 *     The identifiers are listed here first so that tools that store compressed blocks can
 *     name the format they hold.
 */
#ifndef PACKKV_PACKKV_EXPERIMENTAL_H
#define PACKKV_PACKKV_EXPERIMENTAL_H

#if !defined(PACKKV_EXPERIMENTAL_API)
#error "packkv_experimental.h declares functions that are not frozen; define PACKKV_EXPERIMENTAL_API to use it"
#endif

#include "packkv/packkv.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Version of this experimental header: raised whenever anything in it changes. */
#define PACKKV_EXPERIMENTAL_VERSION 1

/** Identifier of a compressed block format (the layout of a block's bytes: header,
 *  permutation, zero points and scales, tiles). The values are those of the library's
 *  internal fmt::FormatId (src/format/shape.h of the source repository).
 *
 *  PACKKV_FORMAT_ROUND_MAJOR  tiles of rounds of 16 tokens: per round the channels'
 *                             minimums, encode lengths and packed offsets (PACKKV.md
 *                             section 5); the format of every cache of this version. */
typedef enum packkv_format_id {
  PACKKV_FORMAT_ROUND_MAJOR = 1
} packkv_format_id_t;

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* PACKKV_PACKKV_EXPERIMENTAL_H */
