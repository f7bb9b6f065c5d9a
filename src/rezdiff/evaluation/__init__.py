"""The evaluation harness: score any model at several resolutions with FID, KID, patch FID, SWD, PSNR/SSIM,
scale consistency or any registered metric, sharded over DDP ranks, with reference features cached on disk.

It relies only on the family contract: ``model.sample(num, resolution, steps=, generator=, use_ema=,
...)`` for generative metrics, ``model.reconstruct(images, resolution)`` for reconstruction metrics, and
``model.native_resolution`` as the default resolution.

- :class:`Evaluate` (``evaluate.py``): the settings (the config's top-level ``evaluate:`` section), the
  notebook API ``Evaluate(resolutions=[32, 64]).run(model, dataset)`` and the callback ``rezdiff test``
  runs after the test loss, which writes ``metrics.json`` (keys ``<metric>@<resolution>``: ``fid@64``,
  ``kid_std@64``, ``pfid32@128``, ``psnr@256``...).
- :class:`Metric` and :func:`register_metric` (``metric.py``): metrics as objects that declare what they
  need; adding one is a class and a ``register_metric`` line.
- :class:`Pipeline` and :class:`SampleSet` (``pipeline.py``): generation, rendering, crops, features and
  the reference-feature cache, shared by all metrics.
- ``sharding.py``: chunks dealt round-robin to ranks and gathered back in order; generated image ``k`` is
  seeded by (seed, resolution, k), so figures depend on neither the number of ranks nor ``batch_size``.
"""

from rezdiff.evaluation.evaluate import Evaluate
from rezdiff.evaluation.metric import (
    METRICS,
    Metric,
    ReconstructionMetric,
    SampleMetric,
    register_metric,
)
from rezdiff.evaluation.pipeline import (
    Pipeline,
    ReconstructionBatch,
    SampleSet,
    Settings,
    default_stats_dir,
)
from rezdiff.evaluation.sharding import gather_rows, label, shard

__all__ = [
    "METRICS",
    "Evaluate",
    "Metric",
    "Pipeline",
    "ReconstructionBatch",
    "ReconstructionMetric",
    "SampleMetric",
    "SampleSet",
    "Settings",
    "default_stats_dir",
    "gather_rows",
    "label",
    "register_metric",
    "shard",
]
