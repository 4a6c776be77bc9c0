import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture
def parse():
    """Parse CLI flags exactly as ``python main.py ...`` would."""
    import main

    return lambda *flags: main.get_args_parser().parse_args([str(f) for f in flags])
