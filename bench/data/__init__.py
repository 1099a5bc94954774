"""Task data: raw examples from registered sources, fixed splits, fingerprints, and the preprocessing cache."""

# importing a source module registers its sources
from bench.data import celeba, conll, files, glue, multilabel, online_vision, synthetic, tagging, text, vision  # noqa: E402,F401,I001
from bench.data import nyuv2  # noqa: E402,F401,I001  (sources nyuv2, cityscapes)
from bench.data import scenes  # noqa: E402,F401,I001  (source scenes: ray-cast rooms)
from bench.data import crossmodal  # noqa: E402,F401,I001  (source digit_questions: image + text)
from bench.data.base import SOURCES, Split, SuiteData, load_suite_data, register_source

__all__ = ["SOURCES", "Split", "SuiteData", "load_suite_data", "register_source"]
