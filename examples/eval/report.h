// Output of packkv-eval: the human-readable table and the --json document.
#ifndef PACKKV_EVAL_REPORT_H
#define PACKKV_EVAL_REPORT_H

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "eval.h"

namespace packkv_eval {

/** Everything one run produced, for printing. */
struct Report {
  const KvDump* dump = nullptr;
  std::string command;           // the command line, for provenance
  PackkvConfig packkv;           // the table's PackKV configuration
  int sink_tokens = 0;           // tokens kept exact by every method of the table
  int stride = 1;
  std::vector<MethodResult> table;         // packkv, fp8, kivi-2, kivi-4
  std::optional<SweepResult> sweep;
  std::vector<LeverResult> levers;         // --levers
};

/** Prints the table (and the sweep, if any) as aligned text. */
void print_text(std::FILE* out, const Report& r);

/** The whole report as JSON (schema: see packkv_eval.cpp --help). */
nlohmann::json to_json(const Report& r);

/** "none" / "median" / "greedy" for a PACKKV_REPACK_* value. */
const char* repack_name(int repack);

/** "token" / "token-head" for a PACKKV_SCALE_* value. */
const char* granularity_name(int granularity);

}  // namespace packkv_eval

#endif  // PACKKV_EVAL_REPORT_H
