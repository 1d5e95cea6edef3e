"""The config, every parameter stated once: its name, type, default, bounds and meaning.

One dataclass per config section (:class:`Config` is the whole file); each field is declared
with :func:`param`, whose ``help`` is the key's documentation and whose bounds are checked
when the section is built. Nothing else states a default or a bound. The package, one concern
per module:

* :mod:`.fields`: the validator (``param``, ``Section``, partial sections);
* :mod:`.training`, :mod:`.align`, :mod:`.sections`: the sections, each with its own cross-key
  rules (:meth:`Section.check`); ``align.defaults`` and the ``align.runs`` entries are typed
  partial sections of one alignment run (:class:`AlignParams`);
* :mod:`.schema`: ``schemas/config.schema.yaml``, which Snakemake validates a config against
  before anything runs, generated from these classes (``python -m exoflow.config.schema >
  schemas/config.schema.yaml``; ``tests/test_params.py`` fails when the file differs), from
  which ``scripts/config_table.py`` writes docs/CONFIG.md's table;
* :mod:`.constraints`: the ordered table of the rules between sections;
* :mod:`.check`: everything the dry run refuses, in that order.

This module imports the sections only (not the schema, which reads the losses, nor the
constraints, which read the plan): what every workflow script imports stays small, so that
editing a loss re-runs the alignment jobs only (:mod:`exoflow.codehash`). No torch, no Snakemake.
"""

from .align import ALIGN_DATA, AlignDefaults, AlignParams, AlignRun, AlignSection
from .fields import (
                     RUN_NAME,
                     UNSET,
                     Partial,
                     Section,
                     check_run_name,
                     is_section,
                     mapping_of,
                     param,
                     partial_section,
                     split_optional,
                     type_hints,
)
from .sections import (
                     DTYPES,
                     Config,
                     DataParams,
                     EngineParams,
                     EvalParams,
                     GenerationParams,
                     JudgeParams,
                     LoraParams,
                     ModelParams,
                     Runtime,
                     SampleParams,
                     ScoredParams,
                     ScratchParams,
                     StudyParams,
                     SyntheticParams,
                     zero_stage,
)
from .training import LayoutParams, OptimParams, ResponseEOS, RMParams, SFTParams, TrainParams

__all__ = ["ALIGN_DATA", "DTYPES", "RUN_NAME", "UNSET", "AlignDefaults", "AlignParams",
           "AlignRun", "AlignSection", "Config", "DataParams", "EngineParams", "EvalParams",
           "GenerationParams", "JudgeParams", "LayoutParams", "LoraParams", "ModelParams",
           "OptimParams", "Partial", "RMParams", "ResponseEOS", "Runtime", "SFTParams",
           "SampleParams", "ScoredParams", "ScratchParams", "Section", "StudyParams",
           "SyntheticParams", "TrainParams", "check_run_name", "is_section", "mapping_of", "param",
           "partial_section", "split_optional", "type_hints", "zero_stage"]
