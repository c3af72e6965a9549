/*
 * c_minimal.c: the smallest complete use of libpackkv from C.
 *
 * Creates a CPU cache (params.device = -1) for one attention layer with 2 KV heads of
 * head_dim 64, appends 512 tokens of synthetic K/V (float32, host memory), runs one decode
 * attention step for 4 query heads (GQA group of 2), prints the memory statistics, and shows
 * how an error comes back (status code + thread-local message).
 *
 * Build against an installed libpackkv, either way:
 *   cc c_minimal.c $(pkg-config --cflags --libs packkv) -lm -o c_minimal
 *   cmake: find_package(packkv CONFIG REQUIRED) + target_link_libraries(app packkv::packkv)
 * Exit status: 0 on success, 1 on any unexpected failure.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include <packkv/packkv.h>

/* Prints the failing call with its status and message, returns 1. */
static int report(const char* what, packkv_status_t st) {
  /* Read the message right away: it is valid until the next packkv_* call on this thread. */
  fprintf(stderr, "%s failed: %s: %s\n", what, packkv_status_string(st),
          packkv_last_error_message());
  return 1;
}

int main(int argc, char** argv) {
  enum { N_KV_HEADS = 2, HEAD_DIM = 64, N_Q_HEADS = 4, N_TOKENS = 512 };
  if (argc > 1) {  /* --help, or anything else: this program takes no arguments */
    const int help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
    fprintf(help ? stdout : stderr,
            "usage: %s\nThe README's C example: creates a CPU cache (2 KV heads of 64 channels), "
            "appends %d tokens and runs one decode step; takes no arguments.\n",
            argv[0], N_TOKENS);
    return help ? 0 : 2;
  }
  printf("libpackkv %s (%s)\n", packkv_version_string(), packkv_build_info());

  packkv_cache_params_t params;
  packkv_status_t st = packkv_cache_params_init(&params, sizeof params);
  if (st != PACKKV_OK) return report("packkv_cache_params_init", st);
  params.device = -1; /* CPU backend */
  params.n_kv_heads = N_KV_HEADS;
  params.head_dim = HEAD_DIM;
  params.max_seqs = 1;

  packkv_cache_t* cache = NULL;
  st = packkv_cache_create(&params, &cache);
  if (st != PACKKV_OK) return report("packkv_cache_create", st);

  /* Synthetic K and V: [N_TOKENS][N_KV_HEADS][HEAD_DIM] float32. */
  size_t n = (size_t)N_TOKENS * N_KV_HEADS * HEAD_DIM;
  float* k = malloc(n * sizeof *k);
  float* v = malloc(n * sizeof *v);
  if (!k || !v) return 1;
  for (size_t i = 0; i < n; ++i) {
    k[i] = sinf(0.01f * (float)i) + 0.1f * cosf(0.37f * (float)(i % 97));
    v[i] = cosf(0.013f * (float)i) * 0.5f;
  }
  int32_t seq_id = 0, n_tokens = N_TOKENS;
  st = packkv_cache_append(cache, 1, &seq_id, &n_tokens, k, v, PACKKV_DTYPE_F32, NULL);
  if (st != PACKKV_OK) return report("packkv_cache_append", st);

  /* One decode step: q [1][N_Q_HEADS][HEAD_DIM] float32, out [1][N_Q_HEADS][HEAD_DIM]. */
  float q[N_Q_HEADS * HEAD_DIM], out[N_Q_HEADS * HEAD_DIM], lse[N_Q_HEADS];
  for (int i = 0; i < N_Q_HEADS * HEAD_DIM; ++i) q[i] = 0.05f * (float)(i % 17);
  size_t ws_bytes = 0;
  st = packkv_attn_workspace_size(cache, 1, N_Q_HEADS, &ws_bytes);
  if (st != PACKKV_OK) return report("packkv_attn_workspace_size", st);
  void* ws = ws_bytes ? malloc(ws_bytes) : NULL;
  st = packkv_attn_decode(cache, 1, &seq_id, N_Q_HEADS, q, PACKKV_DTYPE_F32,
                          1.0f / sqrtf((float)HEAD_DIM), out, lse, ws, ws_bytes, NULL);
  if (st != PACKKV_OK) return report("packkv_attn_decode", st);
  printf("decode: out[0][0][0..3] = %.5f %.5f %.5f %.5f, lse[0] = %.4f\n", out[0], out[1],
         out[2], out[3], lse[0]);

  packkv_cache_stats_t stats;
  stats.struct_size = sizeof stats;
  st = packkv_cache_stats(cache, -1, &stats);
  if (st != PACKKV_OK) return report("packkv_cache_stats", st);
  long long all_in = (long long)(stats.compressed_bytes_used + stats.residual_bytes);
  printf("tokens %lld (compressed %lld, residual %lld), fp16 %lld bytes, all-in %lld bytes, "
         "ratio %.2fx\n",
         (long long)stats.n_tokens, (long long)stats.n_compressed_tokens,
         (long long)stats.n_residual_tokens, (long long)stats.fp16_bytes, all_in,
         all_in > 0 ? (double)stats.fp16_bytes / (double)all_in : 0.0);

  /* An error on purpose: sequence id 5 does not exist in a cache with max_seqs = 1. */
  int64_t len = 0;
  st = packkv_cache_seq_length(cache, 5, &len);
  if (st == PACKKV_OK) {
    fprintf(stderr, "expected an error for seq_id 5\n");
    return 1;
  }
  printf("expected error: %s: %s\n", packkv_status_string(st), packkv_last_error_message());

  free(ws);
  free(k);
  free(v);
  packkv_cache_destroy(cache);
  return 0;
}
