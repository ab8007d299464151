"""gaussdiff: exact closed-form denoisers, flows and experiments on memorization vs generalization
in diffusion models.

The public API is flat: ``import gaussdiff as gd`` then ``gd.GaussianDenoiser``,
``gd.sample_heun``, ``gd.karras_sigmas``, ...
"""

from .schedules import *  # noqa: F401,F403
from .schedules import __all__ as _schedules_all
from .denoisers import *  # noqa: F401,F403
from .denoisers import __all__ as _denoisers_all
from .empirical import *  # noqa: F401,F403
from .empirical import __all__ as _empirical_all
from .sampling import *  # noqa: F401,F403
from .sampling import __all__ as _sampling_all
from .data import *  # noqa: F401,F403
from .data import __all__ as _data_all
from .networks import *  # noqa: F401,F403
from .networks import __all__ as _networks_all
from .training import *  # noqa: F401,F403
from .training import __all__ as _training_all
from .metrics import *  # noqa: F401,F403
from .metrics import __all__ as _metrics_all
from .predictions import *  # noqa: F401,F403
from .predictions import __all__ as _predictions_all
from .inverse import *  # noqa: F401,F403
from .inverse import __all__ as _inverse_all
from .conditional import *  # noqa: F401,F403
from .conditional import __all__ as _conditional_all

__version__ = "0.1.0"

__all__ = [*_schedules_all, *_denoisers_all, *_empirical_all, *_sampling_all, *_data_all, *_networks_all,
           *_training_all]
__all__ += _metrics_all
__all__ += _predictions_all
__all__ += _inverse_all
__all__ += _conditional_all
from .quality import *  # noqa: F401,F403,E402
from .quality import __all__ as _quality_all  # noqa: E402

__all__ += _quality_all
