// engine_dlopen.cpp: how an inference engine loads libpackkv at run time.
//
// The engine is compiled against <packkv/packkv.h> for the types only and does not link the
// library. At start-up it dlopen()s "libpackkv.so.<MAJOR>" (the SONAME of the major it was built
// for), checks packkv_version_number() / 10000 == PACKKV_VERSION_MAJOR before using any other
// symbol, resolves the entry points it needs, and runs one append + decode step on a CPU cache.
//
// Usage: engine_dlopen [path/to/libpackkv.so.MAJOR]   (default: the SONAME, found by the loader)
// Exit status: 0 on success, 1 on a load/version/API failure.
#include <dlfcn.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <packkv/packkv.h>

namespace {

#define PACKKV_STR2(x) #x
#define PACKKV_STR(x) PACKKV_STR2(x)

// The entry points this engine uses, typed from the header's declarations.
struct PackkvApi {
  decltype(&packkv_version_number) version_number = nullptr;
  decltype(&packkv_version_string) version_string = nullptr;
  decltype(&packkv_status_string) status_string = nullptr;
  decltype(&packkv_last_error_message) last_error_message = nullptr;
  decltype(&packkv_cache_params_init) cache_params_init = nullptr;
  decltype(&packkv_cache_create) cache_create = nullptr;
  decltype(&packkv_cache_destroy) cache_destroy = nullptr;
  decltype(&packkv_cache_append) cache_append = nullptr;
  decltype(&packkv_attn_workspace_size) attn_workspace_size = nullptr;
  decltype(&packkv_attn_decode) attn_decode = nullptr;
  decltype(&packkv_cache_seq_length) cache_seq_length = nullptr;
};

template <typename Fn>
bool resolve(void* lib, const char* name, Fn& fn) {
  fn = reinterpret_cast<Fn>(dlsym(lib, name));
  if (!fn) std::fprintf(stderr, "engine: missing symbol %s\n", name);
  return fn != nullptr;
}

int fail(const PackkvApi& api, const char* what, packkv_status_t st) {
  std::fprintf(stderr, "engine: %s failed: %s: %s\n", what, api.status_string(st),
               api.last_error_message());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 2 || (argc == 2 && (!std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")))) {
    std::fprintf(argc > 2 ? stderr : stdout,
                 "usage: %s [PATH]\n"
                 "Loads libpackkv with dlopen like an inference engine: checks the major version, then\n"
                 "creates a CPU cache, appends tokens and runs decode attention through the resolved\n"
                 "symbols. PATH: the library file (e.g. build/libpackkv.so.0); without it the system\n"
                 "loader looks up libpackkv.so.%d (LD_LIBRARY_PATH or an installed copy).\n",
                 argv[0], PACKKV_VERSION_MAJOR);
    return argc > 2 ? 2 : 0;
  }
  const std::string path =
      argc > 1 ? argv[1] : "libpackkv.so." PACKKV_STR(PACKKV_VERSION_MAJOR);
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    std::fprintf(stderr, "engine: dlopen(%s) failed: %s\n", path.c_str(), dlerror());
    return 1;
  }

  PackkvApi api;
  // The version check comes first: no other symbol is trusted before it passes.
  if (!resolve(lib, "packkv_version_number", api.version_number)) return 1;
  const uint32_t version = api.version_number();
  if (version / 10000 != PACKKV_VERSION_MAJOR) {
    std::fprintf(stderr, "engine: %s has major version %u, this engine needs %d\n", path.c_str(),
                 version / 10000, PACKKV_VERSION_MAJOR);
    return 1;
  }
  bool ok = resolve(lib, "packkv_version_string", api.version_string) &&
            resolve(lib, "packkv_status_string", api.status_string) &&
            resolve(lib, "packkv_last_error_message", api.last_error_message) &&
            resolve(lib, "packkv_cache_params_init", api.cache_params_init) &&
            resolve(lib, "packkv_cache_create", api.cache_create) &&
            resolve(lib, "packkv_cache_destroy", api.cache_destroy) &&
            resolve(lib, "packkv_cache_append", api.cache_append) &&
            resolve(lib, "packkv_attn_workspace_size", api.attn_workspace_size) &&
            resolve(lib, "packkv_attn_decode", api.attn_decode) &&
            resolve(lib, "packkv_cache_seq_length", api.cache_seq_length);
  if (!ok) return 1;
  std::printf("engine: loaded %s, libpackkv %s (version number %u)\n", path.c_str(),
              api.version_string(), version);

  // One layer, CPU backend, 1 KV head of 32 channels, 2 query heads.
  const int32_t n_kv_heads = 1, head_dim = 32, n_q_heads = 2, n_tokens = 300;
  packkv_cache_params_t params;
  packkv_status_t st = api.cache_params_init(&params, sizeof params);
  if (st != PACKKV_OK) return fail(api, "packkv_cache_params_init", st);
  params.device = -1;
  params.n_kv_heads = n_kv_heads;
  params.head_dim = head_dim;
  packkv_cache_t* cache = nullptr;
  st = api.cache_create(&params, &cache);
  if (st != PACKKV_OK) return fail(api, "packkv_cache_create", st);

  std::vector<float> k(static_cast<size_t>(n_tokens) * n_kv_heads * head_dim);
  std::vector<float> v(k.size());
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = std::sin(0.05f * static_cast<float>(i));
    v[i] = std::cos(0.03f * static_cast<float>(i));
  }
  const int32_t seq = 0;
  st = api.cache_append(cache, 1, &seq, &n_tokens, k.data(), v.data(), PACKKV_DTYPE_F32, nullptr);
  if (st != PACKKV_OK) return fail(api, "packkv_cache_append", st);

  std::vector<float> q(static_cast<size_t>(n_q_heads) * head_dim, 0.1f), out(q.size());
  size_t ws_bytes = 0;
  st = api.attn_workspace_size(cache, 1, n_q_heads, &ws_bytes);
  if (st != PACKKV_OK) return fail(api, "packkv_attn_workspace_size", st);
  std::vector<unsigned char> ws(ws_bytes);
  st = api.attn_decode(cache, 1, &seq, n_q_heads, q.data(), PACKKV_DTYPE_F32,
                       1.0f / std::sqrt(static_cast<float>(head_dim)), out.data(), nullptr,
                       ws_bytes ? ws.data() : nullptr, ws_bytes, nullptr);
  if (st != PACKKV_OK) return fail(api, "packkv_attn_decode", st);
  int64_t len = 0;
  st = api.cache_seq_length(cache, seq, &len);
  if (st != PACKKV_OK) return fail(api, "packkv_cache_seq_length", st);
  std::printf("engine: %lld tokens cached, out[0][0] = %.5f\n", static_cast<long long>(len),
              out[0]);

  api.cache_destroy(cache);
  dlclose(lib);
  return len == n_tokens ? 0 : 1;
}
