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


@pytest.fixture(autouse=True, scope="session")
def _own_parse_cache(tmp_path_factory):
    # The code modality's parse cache lives in $CONTRASTIVE_CACHE; tests keep theirs out of the user's home.
    import os

    before = os.environ.get("CONTRASTIVE_CACHE")
    os.environ["CONTRASTIVE_CACHE"] = str(tmp_path_factory.mktemp("parse-cache"))
    yield
    if before is None:
        os.environ.pop("CONTRASTIVE_CACHE", None)
    else:
        os.environ["CONTRASTIVE_CACHE"] = before


@pytest.fixture
def tiny_data():
    return make_splits()
