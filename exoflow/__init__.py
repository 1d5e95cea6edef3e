"""exoflow: the logic behind the EXO/DPO Anthropic-HH workflow.

One concern per module; nothing here imports snakemake.
"""

__version__ = "0.1.0"
