"""Fixtures shared by every test module; the plain helpers they use are in helpers.py."""

import pytest
import torch

from helpers import make_splits


@pytest.fixture(autouse=True)
def _few_threads():
    # Tests are many tiny ops; one thread avoids oversubscription on 2-core CI machines.
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


@pytest.fixture
def tiny_data():
    return make_splits()
