"""gaussdiff: exact closed-form denoisers, flows and experiments on memorization vs generalization
in diffusion models.

The public API is flat: ``import gaussdiff as gd`` then ``gd.GaussianDenoiser``,
``gd.sample_heun``, ``gd.karras_sigmas``, ... Every public name is imported here by name, module
by module (nothing is star-imported), and ``__all__`` is the modules' ``__all__`` lists in the
same order.
"""

from .schedules import (
    Schedule,
    EDM,
    VP,
    VPDiscrete,
    OU,
    RectifiedFlow,
    karras_sigmas,
    vp_sigmas,
    flow_sigmas,
    score_from_denoiser,
    denoiser_from_score,
    eps_from_denoiser,
    denoiser_from_eps,
    velocity_from_denoiser,
    denoiser_from_velocity,
    to_d,
    append_zero,
)
from .denoisers import Denoiser, GaussianDenoiser, GaussianMixtureDenoiser
from .empirical import EmpiricalDenoiser
from .local import PatchDenoiser, PatchSizeSchedule, calibrate_patch_size, WienerMaskDenoiser, wiener_masks
from .sampling import (
    sample_euler,
    sample_heun,
    sample_edm_stochastic,
    sample_euler_ancestral,
    ancestral_step,
    solve_flow,
    seeded_noise,
)
from .data import (
    load_dataset,
    available_datasets,
    register_dataset,
    subset,
    disjoint_split,
    split_indices,
    resize_images,
    to_unit_range,
    data_fingerprint,
    gaussian_data,
    gmm_data,
    molrg_data,
    two_gaussians_data,
    sphere_data,
    read_array,
    read_image_folder,
    read_idx,
    read_mnist_idx,
    read_cifar10,
    natural_image_patches,
    FASHION_MNIST_DIR,
)
from .networks import MLP, UNet, Preconditioned, NetworkDenoiser, build_network, init_weights, FRAMEWORKS, NETS, NORMS
from .training import (
    TrainSettings,
    TRAIN_DEFAULTS,
    TrainResult,
    denoising_loss,
    training_sigmas,
    train_denoiser,
    load_denoiser,
    weights_fingerprint,
    train_ensemble,
)
from .metrics import (
    Fraction,
    ReproducibilityResult,
    bootstrap_fraction,
    nearest_training,
    memorized,
    memorization_fraction,
    memorized_within,
    generalization_score,
    max_similarity,
    reproducibility,
    Similarity,
    CentredCosine,
    NormalisedL2,
    FeatureCosine,
    get_similarity,
    SigmaProfile,
    LinearDistillation,
    DistillationComparison,
    GeneralizationGap,
    OptimumGap,
    denoiser_distance,
    optimum_gap,
    linearity_score,
    centred_linearity_score,
    linear_distillation,
    distillation_distance_to_gaussian,
    generalization_gap,
    denoiser_jacobian,
    jacobian_spectrum,
    effective_rank,
    effective_dimension,
    Agreement,
    AgreementProfile,
    AGREEMENT_MEASURES,
    coefficient_of_determination,
    pearson_correlation,
    variance_normalised_r2,
    cosine_similarity,
    agreement_measures,
    agreement_profile,
)
from .predictions import (
    speciation_time,
    symmetry_breaking_time,
    collapse_time,
    gaussian_sampler_factors,
    gaussian_sampler_output,
    gaussian_sampler_w2,
)
from .inverse import (
    LinearOperator,
    MatrixOperator,
    InpaintOperator,
    BlurOperator,
    DownsampleOperator,
    random_projection,
    make_operator,
    as_operator,
    gaussian_posterior,
    mixture_posterior,
    empirical_posterior,
    PosteriorDenoiser,
    GaussianPosteriorDenoiser,
    MixturePosteriorDenoiser,
    EmpiricalPosteriorDenoiser,
    sample_dps,
    sample_pigdm,
    sample_ddrm,
    run_posterior_sampler,
    POSTERIOR_SAMPLERS,
    measure_posterior_samples,
    gaussian_w2,
)
from .conditional import (
    ClassConditionalDenoiser,
    GuidedDenoiser,
    classifier_free_guidance,
    guided_gaussian_flow,
    guided_gaussian_output,
)
from .quality import (
    FeatureStats,
    frechet_distance,
    pixel_frechet_distance,
    FeatureClassifier,
    feature_classifier,
    classifier_frechet_distance,
    cache_dir,
)

from .adapters import CallableDenoiser, DiffusersDenoiser, LoadedModel, load_model
from .compare import (
    CompareSettings,
    Comparison,
    compare_denoisers,
    sample_model,
    write_comparison,
    plot_distances,
    plot_sample_grid,
)

from ._version import __version__ as __version__  # a dunder, not listed in __all__

from . import (
    schedules,
    denoisers,
    empirical,
    local,
    sampling,
    data,
    networks,
    training,
    metrics,
    predictions,
    inverse,
    conditional,
    quality,
    adapters,
    compare,
)

# The face lists each module's public names, in the order of the imports above (tests/test_checks.py
# holds the by-name imports, the modules' __all__ and this list to one another).
__all__: list[str] = []
__all__ += schedules.__all__
__all__ += denoisers.__all__
__all__ += empirical.__all__
__all__ += local.__all__
__all__ += sampling.__all__
__all__ += data.__all__
__all__ += networks.__all__
__all__ += training.__all__
__all__ += metrics.__all__
__all__ += predictions.__all__
__all__ += inverse.__all__
__all__ += conditional.__all__
__all__ += quality.__all__
__all__ += adapters.__all__
__all__ += compare.__all__
