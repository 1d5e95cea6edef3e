import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HH_SAMPLE = Path(os.environ.get("EXOFLOW_HH_SAMPLE", ROOT.parent / "shared" / "hh-rlhf-sample" / "harmless-base"))

# Keep torch to the cores CI has and quiet the DeepSpeed accelerator probe.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def hh_sample() -> Path:
    if not (HH_SAMPLE / "train.jsonl.gz").exists():
        pytest.skip(f"real HH sample not found at {HH_SAMPLE} (it sits beside the checkout in shared/; or set EXOFLOW_HH_SAMPLE)")
    return HH_SAMPLE
