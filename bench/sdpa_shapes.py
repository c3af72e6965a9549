# SDPA fp16 decode baselines at explicit shapes (issue 14 runs): python3 bench/sdpa_shapes.py OUT.csv BH,T,D,g ...
# writes "BH,T,D,g,ms" lines (median of 10 after 3 warm-ups), the format packkv_bench_gpu --sdpa reads.
import sys
if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
    print("usage: python3 bench/sdpa_shapes.py OUT.csv BH,T,D,g [BH,T,D,g ...]\n"
          "SDPA fp16 decode times (ms, median of 10 after 3 warm-ups, CUDA) written as BH,T,D,g,ms lines\n"
          "for packkv_bench_gpu --sdpa; H = 8 KV heads, B = BH / 8, g query heads per KV head.")
    sys.exit(0 if len(sys.argv) > 1 else 2)
import torch, torch.nn.functional as F
out = open(sys.argv[1], "w")
shapes = [tuple(int(x) for x in s.split(",")) for s in sys.argv[2:]]
for bh, T, D, g in shapes:
    H = 8; B = bh // H
    q = torch.randn(B, H * g, 1, D, device="cuda", dtype=torch.float16)
    k = torch.randn(B, H, T, D, device="cuda", dtype=torch.float16)
    v = torch.randn(B, H, T, D, device="cuda", dtype=torch.float16)
    fn = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=(g > 1))
    for _ in range(3): fn()
    ts = []
    for _ in range(10):
        a = torch.cuda.Event(enable_timing=True); b = torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b))
    ts.sort(); out.write(f"{bh},{T},{D},{g},{ts[len(ts)//2]:.5f}\n")
    del q, k, v
