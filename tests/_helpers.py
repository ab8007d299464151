"""Small shared test helpers (importable: pytest puts this folder on sys.path)."""

import torch

# the smallest training run the training tests use
TINY = dict(width=16, depth=1, batch_size=16, progress=False, warmup=5, log_every=5, num_threads=1)


def same_weights(a, b) -> bool:
    """Whether two modules hold bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
