// Encode-aware repacking: a permutation of the tokens of one block that puts similar
// tokens into the same 16-token pack (PACKKV.md section 4). perm[j] is the original
// token (0..n-1) stored in slot j. K, V, zero points and scales of a token move
// together, so attention does not depend on the permutation (test vector T10).
#ifndef PACKKV_REPACK_H
#define PACKKV_REPACK_H

#include <stdint.h>

namespace packkv {

// Median method (section 4.2): key = lower median of the token's V codes (the row of
// row_len codes of every head and channel); tokens sorted by key descending, ties in
// original order (stable). v_codes: uint8 [n][row_len].
void median_order(const uint8_t* v_codes, int n, int row_len, uint8_t* perm);

// Greedy method (section 4.3) on rows of row_len codes (K codes then V codes of the
// token): repeatedly seeds a pack with the remaining row of highest cosine similarity
// to the rounded mean of the remaining rows, then adds the row that least increases
// the pack's summed encode length (ties: lowest index). n must be a multiple of
// pack_tokens. rows: uint8 [n][row_len].
void greedy_order(const uint8_t* rows, int n, int row_len, int pack_tokens, uint8_t* perm);

}  // namespace packkv

#endif  // PACKKV_REPACK_H
