"""The stages strategies are made of: ``finetune``, ``fuse``, ``joint``, ``evaluate`` (plus ``init``, θ0).

Each stage is cached in the store under a hash of everything that changes its output (its config, the keys of its
inputs, the data fingerprint, the content hash of the pre-trained weights, the seed, the stage's implementation
version), so ``separate`` and ``fuse_then_joint`` share their fine-tunes and a fusion-weight search re-fuses cached
checkpoints instead of re-training them. Every stage that evaluates keeps its per-example predictions
(``predictions.npz``) and every ``stage.json`` records the code and library versions that produced it.

Seeds are *paired*: seed s gives every joint training the same head initialisation and batch order whatever its
weighting, so two strategies differ at one seed only by what they do differently.

The package, one concern a module:

- :mod:`~bench.stages.context`: a loaded suite, a stage's checkpoint, a stage's outcome;
- :mod:`~bench.stages.keys`: what a stage's cache key holds (versions, train settings, frozen names, weights hash);
- :mod:`~bench.stages.base`: the :class:`Stages` a strategy composes; :mod:`~bench.stages.cache`: reuse or
  compute under the entry's lock;
- one module per stage: :mod:`~bench.stages.init`, :mod:`~bench.stages.finetune`, :mod:`~bench.stages.fuse`,
  :mod:`~bench.stages.joint`, :mod:`~bench.stages.evaluate` (with :mod:`~bench.stages.training`,
  :mod:`~bench.stages.evaluation` and :mod:`~bench.stages.models`, what they share);
- :mod:`~bench.stages.predictions`: the per-example predictions every evaluating stage keeps;
  :mod:`~bench.stages.batches`: a split as seeded batches, for strategies and data-aware methods;
- :mod:`~bench.stages.rows`: :func:`make_row`, a leaderboard row from the outcomes that produced it.

Strategies import from here: ``from bench.stages import Stages, make_row``.
"""

from bench.stages.base import Stages
from bench.stages.batches import Batches
from bench.stages.context import Checkpoint, Outcome, StageLog, SuiteContext
from bench.stages.keys import STAGE_VERSION, STAGE_VERSIONS, frozen_names, weights_hash
from bench.stages.predictions import PREDICTIONS, save_predictions
from bench.stages.rows import make_row

__all__ = ["PREDICTIONS", "STAGE_VERSION", "STAGE_VERSIONS", "Batches", "Checkpoint", "Outcome", "StageLog",
           "Stages", "SuiteContext", "frozen_names", "make_row", "save_predictions", "weights_hash"]
