"""Fixtures shared by the test modules (built from tests/helpers/)."""

import os
from types import SimpleNamespace

import pytest

from tests.helpers import HH_SAMPLE, make_align_data, make_base, make_data

# Keep torch to the cores CI has and quiet the DeepSpeed accelerator probe.
os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def hh_sample():
    if not (HH_SAMPLE / "train.jsonl.gz").exists():
        pytest.skip(f"real HH sample not found at {HH_SAMPLE} (it sits beside the checkout in "
                    "shared/; or set EXOFLOW_HH_SAMPLE)")
    return HH_SAMPLE


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and 2 threads on a shared CPU can be 10x slower
    (``pytestmark = pytest.mark.usefixtures("one_thread")`` in a module that wants it)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random 2-layer GPT-NeoX base (``base``) and 64 train / 16 test pairs."""
    root = tmp_path_factory.mktemp("tiny")
    train, test = make_data(root / "data")
    return SimpleNamespace(root=root, base=make_base(root / "base"), train=train, test=test)


@pytest.fixture(scope="module")
def align_data(tmp_path_factory):
    """Alignment records (K=2 and K=4), an "SFT" model and the K=4 reference cache."""
    return make_align_data(tmp_path_factory.mktemp("align"))
