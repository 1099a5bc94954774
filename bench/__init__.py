"""bench: benchmark and ablate multi-task fine-tuning strategies.

The package in layers, top to bottom; a module imports from its own layer and those below it, never from one above
(docs/design.md, "Layers"; tests/test_layers.py checks it):

* commands: ``cli``, ``runner`` (``bench run``), ``search/``, ``report/``, ``check`` + ``gate``, ``verify``,
  ``calibration``, and ``api`` (the one import for plug-in authors);
* planning: ``precheck``, ``plan``, ``run_context``;
* training: ``stages/``, ``engine/``, ``data/``, ``encode``, ``batches``;
* plug-in seams: ``plugins/``, ``specs``, ``strategy``, ``weighting/``, ``fusion/``, ``track/``, ``launch/``,
  ``backbones/``, ``model``, ``rowstyle``, ``suites``, ``tasks/`` (task kinds);
* storage and records: ``store/``, ``record``, ``rowid``, ``checkpoint``, ``safestate``, ``references/``;
* statistics: ``twolevel``, ``stats/``, ``metrics``;
* foundations: ``config``, ``options``, ``overrides``, ``errors``.
"""

__version__ = "0.1.0"
