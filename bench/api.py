"""Everything a plug-in author needs, in one import.

A plug-in is a Python file in ``./strategies`` or a ``plugin_dirs=[...]`` folder, or a module of a package installed
with a ``bench.plugins`` entry point (:mod:`bench.plugins.discovery`). It registers what it defines:

* a strategy: subclass :class:`Strategy`, declare its ``Params`` (a :class:`Frozen` model; a weighting or fusion
  method the user picks is a :class:`WeightingSpec` / :class:`FusionSpec` field, checked once by the plan), compose
  :class:`Stages` in ``run`` and return ``{variant: make_row(...)}``; ``@register_strategy("name")``;
* a loss weighting (:class:`Weighting`: ``combine``) or a gradient aggregator (:class:`Aggregator`: ``backward``,
  with the per-task Jacobian from the :class:`Step`); ``@register_weighting("name")``;
* a fusion method: :class:`FusionMethod` (one tensor name at a time) or :class:`ModelFusion` (models and data);
  ``@register_fusion("name")``;
* a tracker (:class:`Tracker`, ``@register_tracker``) or a launcher (:class:`Launcher`, ``@register_launcher``);
* a task kind (:class:`TaskKind`, ``@register_task_kind``) or an architecture (:class:`Architecture`: how tasks share
  parameters between the backbone and the heads, ``@register_architecture``).

A strategy that lets the user pick a weighting or a fusion method types the parameter as a :class:`WeightingSpec`
or a :class:`FusionSpec`: the name is checked against the registry and its params by the plug-in's own ``Params``,
once, with the strategy's params.

Bad input is one line: raise :class:`BenchError` naming the bad value and the fix.

Example (a complete weighting plug-in)::

    from bench.api import Weighting, register_weighting

    @register_weighting("first_task")
    class FirstTask(Weighting):
        '''Only the first task's loss.'''

        def combine(self, losses):
            return next(iter(losses.values()))
"""

from bench.architectures import Architecture, register_architecture
from bench.config import Frozen, NoParams
from bench.errors import BenchError, CellFailed
from bench.fusion.base import FusionMethod, register_fusion
from bench.fusion.model_based import FusionJob, FusionResult, ModelFusion
from bench.launch.base import Done, Job, Launcher, register_launcher
from bench.specs import ArchitectureSpec, FusionSpec, WeightingSpec
from bench.stages import Outcome, Stages, SuiteContext, make_row
from bench.strategy import Carry, ScheduleStrategy, Strategy, TaskStep, register_strategy
from bench.tasks import TaskKind, register_task_kind
from bench.track.base import StageRun, Tracker, register_tracker
from bench.weighting.base import Aggregator, Balancer, Step, Weighting, check_weighting, register_weighting

__all__ = ["Aggregator", "Architecture", "ArchitectureSpec", "Balancer", "BenchError", "Carry", "CellFailed", "Done",
           "Frozen", "FusionJob", "FusionMethod", "FusionResult", "FusionSpec", "Job", "Launcher", "ModelFusion",
           "NoParams", "Outcome", "ScheduleStrategy", "StageRun", "Stages", "Step", "Strategy", "SuiteContext",
           "TaskKind", "TaskStep", "Tracker",
           "Weighting", "WeightingSpec", "check_weighting", "make_row", "register_architecture", "register_fusion",
           "register_launcher", "register_strategy", "register_task_kind", "register_tracker", "register_weighting"]
