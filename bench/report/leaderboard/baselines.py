"""Each row's Δm% baseline: the ``separate`` row with the same data and budget fingerprints, and for a row without one
a note that says which command makes it."""

from __future__ import annotations

from bench.report.inference import RowInfo
from bench.report.records import BASELINE_VARIANT, config_differences


def _train_overrides(row: RowInfo, other: RowInfo) -> list[str]:
    """The ``train.*`` / ``budget_match`` settings of ``row`` that differ from ``other`` (as ``key=value``)."""
    mine = {"suite": {"train": row.config.get("suite", {}).get("train", {})},
            "budget_match": row.config.get("budget_match", "none")}
    theirs = {"suite": {"train": other.config.get("suite", {}).get("train", {})},
              "budget_match": other.config.get("budget_match", "none")}
    diffs = config_differences({"row": mine, "other": theirs})["row"]
    return [d.replace("budget_match=", "budget.match=", 1) for d in diffs]


def find_baselines(infos: dict[str, RowInfo], order: list[str], suite: str) -> tuple[dict[str, str | None], dict]:
    """Each row's Δm% baseline (a separate row with the same data and budget fingerprints) or None, and for the
    rows without one the reason (``{row: note}``)."""
    candidates = [infos[n] for n in order if infos[n].candidate]
    out: dict[str, str | None] = {}
    reasons: dict[str, str] = {}
    for name in order:
        row = infos[name]
        if row.candidate:
            out[name] = name
            continue
        same = [c for c in candidates if c.data_fp == row.data_fp and c.budget_fp == row.budget_fp]
        if len(same) > 1:  # e.g. separate with other backbones: prefer the identical suite, then the plain name
            same = ([c for c in same if c.config.get("suite") == row.config.get("suite")] or same)
            same = [c for c in same if c.origin == BASELINE_VARIANT] or same
        if len(same) == 1:
            out[name] = same[0].name
            continue
        out[name] = None
        if same:
            names = ", ".join(c.name for c in same)
            reasons[name] = (f"Δm% empty for {name}: {len(same)} separate rows share its budget and data ({names}); "
                             f"give the runs distinct labels with `label=...`")
            continue
        same_data = [c for c in candidates if c.data_fp == row.data_fp]
        nearest = min(same_data, key=lambda c: len(_train_overrides(row, c))) if same_data else None
        overrides = _train_overrides(row, nearest) if nearest else []
        if nearest is not None and overrides:
            settings = " ".join(overrides)
            reasons[name] = (f"Δm% empty for {name}: no separate row with the same budget ({', '.join(overrides)}) "
                             f"and data; run `bench run suite={suite} strategy=separate {settings}`")
        elif nearest is not None:  # same train settings, yet another budget fingerprint (e.g. a changed code path)
            reasons[name] = (f"Δm% empty for {name}: no separate row with the same budget fingerprint and data; "
                             f"rerun `bench run suite={suite} strategy=separate` with the same train settings")
        elif candidates:
            reasons[name] = (f"Δm% empty for {name}: no separate row with the same data (data fingerprint "
                             f"{row.data_fp[:8] or 'none'}); run `bench run suite={suite} strategy=separate` on "
                             f"the same data")
        else:
            reasons[name] = (f"Δm% empty for {name}: no separate row; run `bench run suite={suite} "
                             f"strategy=separate` with the same train settings")
    return out, reasons
