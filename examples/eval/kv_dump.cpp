#include "kv_dump.h"

#include <algorithm>
#include <cstring>
#include <regex>
#include <set>
#include <stdexcept>

#include "numeric.h"
#include "safetensors.h"

namespace packkv_eval {

namespace {

/** Checks a tensor's dtype and shape and returns its fp16 bit patterns. */
std::vector<uint16_t> take_f16(const SafeTensors& st, const std::string& path, const std::string& name,
                               const std::vector<int64_t>& shape) {
  auto it = st.tensors.find(name);
  if (it == st.tensors.end()) throw std::runtime_error(path + ": missing tensor " + name);
  const Tensor& t = it->second;
  if (t.dtype != "F16") throw std::runtime_error(path + ": tensor " + name + " is " + t.dtype + ", expected F16");
  if (t.shape != shape) {
    std::string want, got;
    for (auto d : shape) want += std::to_string(d) + " ";
    for (auto d : t.shape) got += std::to_string(d) + " ";
    throw std::runtime_error(path + ": tensor " + name + " has shape [ " + got + "], expected [ " + want + "]");
  }
  std::vector<uint16_t> out((size_t)t.numel());
  std::memcpy(out.data(), t.bytes.data(), t.bytes.size());  // little-endian host assumed
  return out;
}

std::vector<double> to_double(const std::vector<uint16_t>& h) {
  std::vector<double> d(h.size());
  for (size_t i = 0; i < h.size(); ++i) d[i] = half_to_double(h[i]);
  return d;
}

}  // namespace

KvDump load_kv_dump(const std::string& path, const std::vector<int>& layer_filter) {
  SafeTensors st = read_safetensors(path);
  KvDump dump;
  dump.path = path;
  dump.metadata = st.metadata;

  std::set<int> layer_ids;
  const std::regex re("layer\\.([0-9]+)\\.k");
  for (const auto& [name, t] : st.tensors) {
    std::smatch m;
    if (std::regex_match(name, m, re)) layer_ids.insert(std::stoi(m[1].str()));
  }
  if (!layer_filter.empty()) {
    for (int l : layer_filter)
      if (!layer_ids.count(l)) throw std::runtime_error(path + ": no layer " + std::to_string(l) + " in the dump");
    layer_ids = std::set<int>(layer_filter.begin(), layer_filter.end());
  }
  if (layer_ids.empty()) throw std::runtime_error(path + ": no layer.{L}.k tensors");

  const Tensor& k0 = st.tensors.at("layer." + std::to_string(*layer_ids.begin()) + ".k");
  auto qit = st.tensors.find("layer." + std::to_string(*layer_ids.begin()) + ".q");
  if (k0.shape.size() != 3) throw std::runtime_error(path + ": K must be [T, n_kv_heads, head_dim]");
  if (qit == st.tensors.end() || qit->second.shape.size() != 3)
    throw std::runtime_error(path + ": missing or malformed layer.{L}.q (need [Tq, n_q_heads, head_dim])");
  dump.n_tokens = (int)k0.shape[0];
  dump.n_kv_heads = (int)k0.shape[1];
  dump.head_dim = (int)k0.shape[2];
  dump.n_queries = (int)qit->second.shape[0];
  dump.n_q_heads = (int)qit->second.shape[1];
  if (dump.n_tokens < 1 || dump.n_kv_heads < 1 || dump.head_dim < 1)
    throw std::runtime_error(path + ": empty K tensor");
  if (dump.n_queries < 1 || dump.n_queries > dump.n_tokens)
    throw std::runtime_error(path + ": need 1 <= Tq <= T queries");
  if (dump.n_q_heads % dump.n_kv_heads != 0)
    throw std::runtime_error(path + ": n_q_heads is not a multiple of n_kv_heads");
  auto qpos = dump.metadata.find("q_positions_start");
  if (qpos != dump.metadata.end() && std::stoi(qpos->second) != dump.n_tokens - dump.n_queries)
    throw std::runtime_error(path + ": q_positions_start is not T - Tq (queries must be the last positions)");

  const std::vector<int64_t> kv_shape = {dump.n_tokens, dump.n_kv_heads, dump.head_dim};
  const std::vector<int64_t> q_shape = {dump.n_queries, dump.n_q_heads, dump.head_dim};
  for (int l : layer_ids) {
    DumpLayer L;
    L.index = l;
    const std::string p = "layer." + std::to_string(l) + ".";
    L.k = take_f16(st, path, p + "k", kv_shape);
    L.v = take_f16(st, path, p + "v", kv_shape);
    L.q = take_f16(st, path, p + "q", q_shape);
    L.kd = to_double(L.k);
    L.vd = to_double(L.v);
    L.qd = to_double(L.q);
    dump.layers.push_back(std::move(L));
  }
  return dump;
}

}  // namespace packkv_eval
