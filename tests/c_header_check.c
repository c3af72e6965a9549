/* Compiled as -std=c99 -Wall -Wextra -Werror -pedantic: the public headers are plain C99
 * (packkv.h, and packkv_experimental.h behind its opt-in macro). */
#define PACKKV_EXPERIMENTAL_API
#include "packkv/packkv.h"
#include "packkv/packkv_experimental.h"

int packkv_header_check(void);
int packkv_header_check(void) {
  packkv_cache_params_t p;
  packkv_cache_stats_t s;
  packkv_format_id_t f = PACKKV_FORMAT_ROUND_MAJOR;
  (void)packkv_cache_params_init;
  return (int)(sizeof p + sizeof s) + PACKKV_OK + (int)f - PACKKV_EXPERIMENTAL_VERSION;
}
