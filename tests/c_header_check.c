/* Compiled as -std=c99 -Wall -Wextra -Werror -pedantic: the public header is plain C99. */
#include "packkv/packkv.h"

int packkv_header_check(void);
int packkv_header_check(void) {
  packkv_cache_params_t p;
  packkv_cache_stats_t s;
  (void)packkv_cache_params_init;
  return (int)(sizeof p + sizeof s) + PACKKV_OK;
}
