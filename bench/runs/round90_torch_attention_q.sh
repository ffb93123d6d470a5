#!/usr/bin/env bash
# Round 90: the torch attention reads its threads' share of q instead of staging it (one barrier
# and one round of loads fewer); the attention tests on this GPU, a greedy check against the
# CPU on Dawn, then before (d1cdf6c, bench/_before, not committed) / after, compiled f16 and
# f32, 5 runs.
set -u
if python3 -c "import pytest" 2>/dev/null; then
  timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/test_torch_compile.py \
    -k "attention or subgroups or decode_graph" 2>&1 | tail -3
else
  echo "no pytest here: greedy check only"
fi
timeout 200 python3 - <<'PY'
import torch, transformers, warnings
warnings.simplefilter("ignore")
import webgpu_llm.torch as wt
wt.set_backend("dawn")
for dtype in (torch.float32, torch.float16):
    torch.manual_seed(0)
    cfg = transformers.Qwen2Config(vocab_size=500, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512)
    ref = transformers.Qwen2ForCausalLM(cfg).eval()
    ids = torch.randint(0, 500, (1, 40), generator=torch.Generator().manual_seed(2))
    want = ref.to(dtype).generate(ids, max_new_tokens=40, do_sample=False, cache_implementation="static", pad_token_id=0)
    dev = transformers.Qwen2ForCausalLM(cfg).eval()
    dev.load_state_dict(ref.state_dict())
    dev = dev.to("webgpu")
    dev.forward = torch.compile(dev.forward, backend="webgpu")
    with torch.no_grad():
        got = dev.generate(ids.to("webgpu"), max_new_tokens=40, do_sample=False, cache_implementation="static",
                           pad_token_id=0).cpu()
    same = int((got == want).all(-1).sum())
    first_diff = next((i for i in range(got.shape[1]) if got[0, i] != want[0, i]), None)
    print(f"greedy {dtype}: {'same as the CPU' if same else f'differs from position {first_diff}'}; "
          f"fusions {[g['fusions'].get('fuse_attention_into_linear') for g in wt.graph_report()]}")
PY
timeout 330 python3 bench/torch_ab.py --before bench/_before --repeat 1 --out-dir $OUT -- \
  --backend dawn --dtypes f16,f32 --modes compiled --runs 5 2>&1 | tail -6
