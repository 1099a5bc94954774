"""The package's layers (docs/design.md, "Layers"): no import cycle, no function-local import that only dodges one,
and no module-level import from a layer up to a layer above it. Read from the syntax trees (scripts/import_graph.py);
nothing is imported."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from import_graph import cycles, graph, reachable  # noqa: E402

#: top to bottom; a module belongs to the layer of its longest listed prefix
LAYERS = {
    "commands": ["bench.cli", "bench.__main__", "bench.runner", "bench.search", "bench.report", "bench.check",
                 "bench.gate", "bench.verify", "bench.calibration", "bench.api"],
    "planning": ["bench.precheck", "bench.plan", "bench.run_context"],
    "training": ["bench.stages", "bench.schedule", "bench.engine", "bench.data", "bench.encode", "bench.batches"],
    "plug-in seams": ["bench.plugins", "bench.registry", "bench.specs", "bench.strategy", "bench.weighting",
                      "bench.fusion", "bench.track", "bench.launch", "bench.backbones", "bench.model",
                      "bench.rowstyle", "bench.suites", "bench.tasks", "bench.architectures", "bench.augment"],
    "storage and records": ["bench.store", "bench.record", "bench.rowid", "bench.checkpoint", "bench.safestate",
                            "bench.references"],
    "statistics": ["bench.twolevel", "bench.stats", "bench.metrics"],
    "foundations": ["bench.config", "bench.taskset", "bench.options", "bench.overrides", "bench.errors", "bench.distributed", "bench"],
}


def layer_of(module: str) -> int:
    hits = [(len(p), i) for i, prefixes in enumerate(LAYERS.values()) for p in prefixes
            if module == p or module.startswith(p + ".")]
    assert hits, f"{module} is in no layer: add it to LAYERS here and to docs/design.md"
    return max(hits)[1]


def test_no_import_cycle_and_no_local_import_that_dodges_one():
    edges, local = graph()
    assert cycles(edges) == []
    assert [(m, line, t) for m, line, t in local if t != m and m in reachable(edges, t)] == []


def test_every_module_imports_only_its_own_layer_or_those_below():
    edges, _ = graph()
    names = list(LAYERS)
    upward = [f"{a} ({names[layer_of(a)]}) -> {b} ({names[layer_of(b)]})"
              for a, targets in sorted(edges.items()) for b in sorted(targets) if layer_of(b) < layer_of(a)]
    assert upward == []
