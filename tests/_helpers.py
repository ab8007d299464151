"""Small shared test helpers (importable: pytest puts this folder on sys.path)."""

import contextlib

import torch

from gaussdiff.experiments import PhaseConfig

# the smallest training run the training tests use
TINY = dict(width=16, depth=1, batch_size=16, progress=False, warmup=5, log_every=5, num_threads=1)


def same_weights(a, b) -> bool:
    """Whether two modules hold bit-identical parameters and buffers."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# A phase-sweep grid of the default's shape, small enough for seconds per cell (width 32, batch 32).
TINY_GRID = PhaseConfig(
    data="gmm:k=2,d=4,n=200",
    sizes=(4, 8, 16),
    widths=(32,),
    batch_size=32,
    steps=40,
    checkpoints=2,
    n_samples=16,
    sample_steps=4,
    dist_points=8,
    dist_sigmas=(0.1, 1.0),
)


def tiny_unet(seed=0, *, channels=(8, 16), groups=4, num_class_embeds=None):
    """A small diffusers ``UNet2DModel`` on 1 x 8 x 8 images, no attention (``(8, 16)``: about
    40k parameters). diffusers draws its initial weights from torch's global generator: they
    are drawn from ``seed`` inside ``fork_rng``, so the caller's global state is untouched."""
    import diffusers

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return diffusers.UNet2DModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            block_out_channels=channels,
            layers_per_block=1,
            down_block_types=("DownBlock2D",) * len(channels),
            up_block_types=("UpBlock2D",) * len(channels),
            norm_num_groups=groups,
            num_class_embeds=num_class_embeds,
        )


@contextlib.contextmanager
def one_thread_each():
    """One torch and one numba thread inside the block, the previous counts restored after it:
    tiny problems run up to 10x faster on a shared 2-core machine without oversubscribed threads
    and hand-offs."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        import numba

        old_numba = numba.get_num_threads()
        numba.set_num_threads(1)
    except Exception:  # pragma: no cover - numba missing or its threading layer not started
        numba, old_numba = None, None
    try:
        yield
    finally:
        torch.set_num_threads(old)
        if numba is not None:
            numba.set_num_threads(old_numba)
