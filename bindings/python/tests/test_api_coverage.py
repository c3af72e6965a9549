"""Every function of the stable C API (include/packkv/packkv.h) is reachable from Python."""

import pathlib
import re

import packkv
from packkv import _raw as raw

HEADER = pathlib.Path(__file__).resolve().parents[3] / "include" / "packkv" / "packkv.h"


def c_api_functions():
    text = HEADER.read_text()
    return sorted(set(re.findall(r"PACKKV_API\s+[\w\s\*]+?\bpackkv_(\w+)\s*\(", text)))


def test_every_c_function_is_wrapped():
    names = c_api_functions()
    assert len(names) >= 22, names
    missing = [n for n in names if not callable(getattr(raw, n, None))]
    assert not missing, f"C functions without a Python wrapper: {missing}"


def test_constants_are_wrapped():
    text = HEADER.read_text()
    for name in set(re.findall(r"\bPACKKV_((?:ERR|DTYPE|REPACK|SCALE)_\w+|OK)\s*=", text)):
        assert hasattr(raw, name), name
    assert raw.CACHE_PARAMS_SIZE_V1 <= raw.CACHE_PARAMS_STRUCT_SIZE
    assert raw.CACHE_STATS_SIZE_V1 <= raw.CACHE_STATS_STRUCT_SIZE


def test_pythonic_layer_covers_the_cache_calls():
    # C function -> where the Pythonic API exposes it.
    covered = {
        "version_number": packkv.version_number, "version_string": packkv.version,
        "build_info": packkv.build_info, "has_cuda": packkv.has_cuda,
        "status_string": packkv.status_string, "last_error_message": packkv.last_error_message,
        "bits_for_rel_scale": packkv.bits_for_rel_scale,
        "cache_create": packkv.Cache, "cache_params_init": packkv.Cache,
        "cache_destroy": packkv.Cache.close, "cache_get_params": packkv.Cache.params,
        "cache_device": packkv.Cache.device, "cache_append": packkv.Cache.append,
        "cache_remove_seq": packkv.Cache.remove_seq, "cache_reset": packkv.Cache.reset,
        "cache_seq_length": packkv.Cache.seq_length, "cache_stats": packkv.Cache.stats,
        "cache_decompress": packkv.Cache.decompress, "cache_sync": packkv.Cache.sync,
        "attn_workspace_size": packkv.Cache.workspace_size, "attn_scores": packkv.Cache.scores,
        "attn_apply": packkv.Cache.apply, "attn_decode": packkv.Cache.decode,
        "copy_last_error": packkv.last_error_message,
    }
    assert not set(c_api_functions()) - set(covered)


EXPERIMENTAL = HEADER.parent / "packkv_experimental.h"


def test_every_experimental_function_is_wrapped_and_covered():
    names = sorted(set(re.findall(r"PACKKV_API\s+[\w\s\*]+?\bpackkv_(x_\w+)\s*\(", EXPERIMENTAL.read_text())))
    assert len(names) >= 10, names
    missing = [n for n in names if not callable(getattr(raw, n, None))]
    assert not missing, f"experimental C functions without a Python wrapper: {missing}"
    covered = {
        "x_last_bytes_needed": packkv.BudgetExceeded, "x_pool_params_init": packkv.Pool,
        "x_pool_page_bytes_for": packkv.page_bytes_for, "x_pool_create": packkv.Pool,
        "x_pool_destroy": packkv.Pool.close, "x_cache_create_in_pool": packkv.Cache,
        "x_pool_stats": packkv.Pool.stats, "x_pool_tokens_fit": packkv.Pool.tokens_fit,
        "x_cache_truncate": packkv.Cache.truncate, "x_cache_fork": packkv.Cache.fork,
        "x_cache_set_window": packkv.Cache.set_window, "x_cache_window_start": packkv.Cache.window_start,
        "x_cache_export_size": packkv.Cache.export_seq, "x_cache_export": packkv.Cache.export_seq,
        "x_cache_import": packkv.Cache.import_seq, "x_cache_set_parallel": packkv.Cache.set_parallel,
    }
    assert not set(names) - set(covered), set(names) - set(covered)
    assert raw.X_ERR_BUDGET_EXCEEDED == packkv.BudgetExceeded.STATUS
    assert raw.X_POOL_PARAMS_SIZE_V1 <= raw.POOL_PARAMS_STRUCT_SIZE
    assert raw.X_POOL_STATS_SIZE_V1 <= raw.POOL_STATS_STRUCT_SIZE
