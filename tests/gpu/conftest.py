"""The gpu tier: runs only where torch sees a CUDA device; everywhere else it skips, saying so."""

import pytest


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
    for item in items:
        if "tests/gpu/" in str(item.fspath):
            item.add_marker(skip)
