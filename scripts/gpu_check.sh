#!/usr/bin/env bash
# The device check of docs/performance.md, run on a lent GPU machine from the repo root after
# `python scripts/gpu_prep.py .gpu` here (carry .gpu). Writes logs and a tarball of records/leaderboards to $OUT.
set -u
export PYTHONUNBUFFERED=1 BENCH_PROGRESS=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/wheels/*.whl
export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD
python3 - <<'PY'
import shutil, torch
from pathlib import Path
from safetensors.torch import load_file, save_file
src, dst = Path(".gpu/minilm16"), Path("/tmp/minilm")
dst.mkdir(exist_ok=True)
for f in src.iterdir():
    if f.name != "model.safetensors":
        shutil.copy(f, dst / f.name)
save_file({k: v.float() if v.is_floating_point() else v for k, v in load_file(str(src / "model.safetensors")).items()},
          str(dst / "model.safetensors"))
print("torch", torch.__version__, torch.cuda.get_device_name(0))
PY
R=$OUT/results
S=suite=.gpu/text_gpu.yaml
{
  timeout 300 python3 -m bench run $S strategy=separate,naive_mtl,fuse_then_joint,uncertainty,gradnorm \
      train.precision=bf16 results_dir=$R
  timeout 90 python3 -m bench run $S strategy=naive_mtl train.precision=fp32 label=naive_mtl_fp32 \
      results_dir=$R report=false
  timeout 150 python3 -m bench run $S strategy=naive_mtl train.precision=bf16 train.compile=true \
      label=naive_mtl_bf16_compile results_dir=$R
  # batch workers are a speed knob (same cell): force a rerun without them to compare the data phase
  timeout 90 python3 -m bench run $S strategy=naive_mtl train.precision=bf16 train.num_workers=0 force=true \
      results_dir=$OUT/results_w0 report=false
} 2>&1 | tee "$OUT/run.log" | grep -v "^\s*$" | tail -60
# hydra's pytest plugin imports a module the carried site packages leave out
timeout 150 python3 -m pytest benchmarks/test_engine_speed.py -q -s --benchmark-only -p no:cacheprovider \
    -p no:hydra_pytest \
    2>&1 | tee "$OUT/bench.log" | grep -E "ratio|passed|failed" | tail -20
python3 - <<'PY' > "$OUT/telemetry.txt"
import json, glob, os
for p in sorted(glob.glob(os.environ["OUT"] + "/results*/*/cells/*/*/record.json")):
    r = json.load(open(p))
    for v, row in r["rows"].items():
        t = row["telemetry"]
        print(r["label"], v, {k: t.get(k) for k in ("train_samples_per_s", "train_tokens_per_s", "mfu",
              "peak_memory_mb", "peak_reserved_mb", "memory_kind", "step_time_ms", "step_breakdown_ms",
              "wall_time_s")},
              {task: round(m[r["tasks"][task]["primary"]], 4) for task, m in row["metrics"].get("test", {}).items()})
PY
cat "$OUT/telemetry.txt"
tar czf "$OUT/records.tgz" --exclude='stages' --exclude='cache' -C "$R" . 2>/dev/null
ls -la "$OUT"
