"""Task data: raw examples from registered sources, fixed splits, fingerprints, and the preprocessing cache."""

from bench.data.base import SOURCES, Split, SuiteData, load_suite_data, register_source

__all__ = ["SOURCES", "Split", "SuiteData", "load_suite_data", "register_source"]

from bench.data import synthetic  # noqa: E402,F401  (registers the built-in sources)
from bench.data import files, glue, online_vision, text, vision  # noqa: E402,F401  (register sources)
