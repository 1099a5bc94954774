"""Print bench's max abs error against the library fixtures, per method × convention (and per setting with -v).

    .venv/bin/python scripts/fusion_conventions_table.py [-v]

The fixtures (tests/fixtures/fusion, made by scripts/make_fusion_fixtures.py) hold the inputs and the outputs of
FusionBench 0.2.33, mergekit 0.1.5 and the TIES authors' functions; tests/test_fusion_conventions.py asserts each
error is ≤ 1e-6.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.checkpoint import load_state  # noqa: E402
from bench.fusion import build_fusion, fuse_files  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "fusion"


def errors() -> list[dict]:
    meta = json.loads((FIXTURES / "settings.json").read_text())
    tasks = [FIXTURES / f"task{i}.safetensors" for i in range(3)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for s in meta["settings"]:
            out = Path(tmp) / f"{s['id']}.safetensors"
            fuse_files(FIXTURES / "theta0.safetensors", tasks, build_fusion(s["method"], s["params"], 3), out)
            got, want = load_state(out), load_file(str(FIXTURES / f"{s['id']}.safetensors"))
            err = max(float((got[k].double() - want[k].double()).abs().max()) for k in want)
            rows.append({**s, "convention": s["params"].get("convention", "mergekit"), "error": err})
    return rows


def main() -> None:
    rows = errors()
    print("| method | convention | reproduces | settings | max abs error |")
    print("|---|---|---|---|---|")
    seen: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        seen.setdefault((r["method"], r["convention"]), []).append(r)
    for (method, conv), rs in seen.items():
        libs = " / ".join(dict.fromkeys(r["library"] for r in rs))
        print(f"| {method} | {conv} | {libs} | {len(rs)} | {max(r['error'] for r in rs):.1e} |")
    if "-v" in sys.argv:
        print()
        for r in rows:
            print(f"{r['id']:45s} {r['error']:.1e}  {r['call']}")


if __name__ == "__main__":
    main()
