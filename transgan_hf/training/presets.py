"""Training recipes: the official per-preset hyper-parameters (../shared/spec/transgan_official.md §2.1) and `tiny`.

`training/train.py --preset stl10` takes every value here from `TRAINING_PRESETS["stl10"]`; each field is also a
flag of the script (same name, `args.py`) that overrides it. Architectures live in
`transgan_hf/configuration_transgan.py` under the same preset names.

Units follow the official scripts:
- `train_batch_size` / `gen_batch_size` are *global* batches (all processes together) of one discriminator loader
  iteration / one generator micro-step, like the official `-dis_bs` / `-gen_bs`, which are divided by the number of
  GPUs. The effective batch of one optimizer step is multiplied by the accumulation steps.
- A training step is one generator update (`max_iter` of the official code). Every step runs
  `n_critic * gradient_accumulation_steps` discriminator loader iterations, i.e. `n_critic` discriminator updates.
  The official 256-px runs stop after `max_iter * n_critic` loader iterations, which is 125 k generator updates with
  their accumulation of 4, hence `max_train_steps=125_000` there.
- EMA: half-life `ema_kimg` thousand images with warm-up `ema_warmup` (official formula, `ema.py` here), or a fixed
  per-step `ema_decay` (256 px).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class TrainingRecipe:
    """Hyper-parameters of one training preset (see the module docstring for the units)."""

    train_batch_size: int
    gen_batch_size: int
    gradient_accumulation_steps: int
    gen_gradient_accumulation_steps: int
    n_critic: int
    loss: str
    phi: float
    r1_gamma: float
    r2_gamma: float
    gp_interval: int
    gp_batch_shrink: int
    learning_rate: float
    adam_beta1: float
    adam_beta2: float
    adam_epsilon: float
    fused_adam: bool
    max_grad_norm: float
    ema_kimg: float | None
    ema_warmup: float
    ema_decay: float | None
    diffaug_policy: str
    max_train_steps: int
    random_flip: bool
    center_crop: bool
    dataset_name: str | None
    image_column: str | None
    logging_steps: int
    save_images_steps: int
    checkpointing_steps: int

    def replace(self, **changes) -> TrainingRecipe:
        return dataclasses.replace(self, **changes)


_OFFICIAL = dict(
    gradient_accumulation_steps=1,
    gen_gradient_accumulation_steps=1,
    n_critic=4,
    loss="wgangp-eps",
    phi=1.0,
    r1_gamma=0.0,
    r2_gamma=0.0,
    gp_interval=1,
    gp_batch_shrink=1,
    learning_rate=1e-4,
    adam_beta1=0.0,
    adam_beta2=0.99,
    adam_epsilon=1e-8,
    fused_adam=True,  # one kernel per Adam update instead of one per tensor (benchmarks/README.md)
    max_grad_norm=5.0,
    ema_kimg=500.0,
    ema_warmup=0.0,
    ema_decay=None,
    max_train_steps=500_000,
    random_flip=True,  # torchvision RandomHorizontalFlip in every official data pipeline
    center_crop=True,  # the official pipelines only resize (all four datasets are square or centre-cropped)
    dataset_name=None,
    image_column=None,
    logging_steps=100,
    save_images_steps=5_000,
    checkpointing_steps=5_000,
)

TRAINING_PRESETS: dict[str, TrainingRecipe] = {
    # exps/cifar_train.py: -gen_bs 128 -dis_bs 64, n_critic 4, ema_kimg 500, ema_warmup 0.1
    "cifar10": TrainingRecipe(**{
        **_OFFICIAL, "train_batch_size": 64, "gen_batch_size": 128, "ema_warmup": 0.1,
        "diffaug_policy": "translation,cutout,color", "dataset_name": "uoft-cs/cifar10", "image_column": "img",
    }),
    # exps/stl_train.py: -gen_bs 64 -dis_bs 32, n_critic 5, ema_warmup 0.05; data: STL-10 train+unlabeled at 48 px
    "stl10": TrainingRecipe(**{
        **_OFFICIAL, "train_batch_size": 32, "gen_batch_size": 64, "n_critic": 5, "ema_warmup": 0.05,
        "diffaug_policy": "translation,stl_erase_ratio,color",
    }),
    # exps/celeba_hq_256_train.py: -gen_bs 32 -dis_bs 16, accumulation 4 / 4, fixed EMA 0.995
    "celeba_hq_256": TrainingRecipe(**{
        **_OFFICIAL, "train_batch_size": 16, "gen_batch_size": 32, "gradient_accumulation_steps": 4,
        "gen_gradient_accumulation_steps": 4, "ema_kimg": None, "ema_decay": 0.995, "max_train_steps": 125_000,
        "diffaug_policy": "filter,translation,erase_ratio,color,hue",
    }),
    # exps/church_256_train.py: -gen_bs 16 -dis_bs 16, accumulation 4 / 8, fixed EMA 0.995
    "church_256": TrainingRecipe(**{
        **_OFFICIAL, "train_batch_size": 16, "gen_batch_size": 16, "gradient_accumulation_steps": 4,
        "gen_gradient_accumulation_steps": 8, "ema_kimg": None, "ema_decay": 0.995, "max_train_steps": 125_000,
        "diffaug_policy": "translation,erase_ratio,color",
    }),
    # CPU demo: MNIST digits within minutes on two cores. Not an official recipe; searched at equal wall-clock on this
    # project's 2-core CPU against a conv GAN (training/README.md, "Quality per CPU-minute"): the official loss, Adam
    # betas and clipping, with an 8x learning rate, one critic step on 32 real images per 16-image generator step,
    # the gradient penalty lazily (every 2nd D update, on half the interpolates), a short EMA half-life that tracks
    # the fast generator, and no DiffAugment: within the default run's ~25 passes over the 5,000 digits the critic
    # does not yet overfit, and translating its inputs only blurred its signal (training/README.md). Longer runs need
    # it back: the critic diverged after ~75 passes (step ~12,000); the demo model turned translation on at 11,000.
    "tiny": TrainingRecipe(**{
        **_OFFICIAL, "train_batch_size": 32, "gen_batch_size": 16, "n_critic": 1, "learning_rate": 8e-4,
        "gp_interval": 2, "gp_batch_shrink": 2, "ema_kimg": 3.0, "ema_warmup": 0.1, "diffaug_policy": "none",
        "max_train_steps": 4_000, "random_flip": False, "dataset_name": "mnist-5k", "logging_steps": 10,
        "save_images_steps": 500, "checkpointing_steps": 1_000,
    }),
}


def get_training_recipe(name: str) -> TrainingRecipe:
    """The training recipe of preset `name`; a `ValueError` lists the valid names."""
    if name not in TRAINING_PRESETS:
        raise ValueError(f"Unknown training preset {name!r}; valid choices are {', '.join(sorted(TRAINING_PRESETS))}.")
    return TRAINING_PRESETS[name]


def recipe_fields() -> list[str]:
    """Names of the recipe fields (each is also a `training/train.py` flag)."""
    return [field.name for field in dataclasses.fields(TrainingRecipe)]
