"""Convert a checkpoint of the official TransGAN code (VITA-Group/TransGAN) into a `TransGANPipeline` folder.

    python -m transgan_hf.convert_official --checkpoint cifar_checkpoint --preset cifar10 --output_dir transgan-cifar10
    python -m transgan_hf.convert_official --checkpoint ckpt --official_args args.json --output_dir out --weights raw

The official checkpoint is a dict saved by `train_derived.py` (`gen_state_dict`, `avg_gen_state_dict` = EMA,
`dis_state_dict`, ...; keys prefixed `module.`). It is read with `torch.load(weights_only=True)`: no code in the file
runs. Every official key is mapped; any key left over, missing, or of the wrong shape stops the conversion
(`WeightMismatchError`: a summary, and every key in its `problems`), and nothing is written to the output folder.
The int64 `relative_position_index` buffers are dropped (the models recompute them). The official flags are
type-checked, and a misspelt flag name is refused rather than replaced by its default. An output folder that holds
the checkpoint or the flags file is refused, with or without `--overwrite`: the conversion never deletes its own
input.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import pickle
import re
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .atomic_files import move_entries_into_place, remove_stale_staging_folders, staging_folder
from .configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from .modeling_transgan import TransGANDiscriminator, TransGANGenerator
from .pipeline_transgan import TransGANPipeline

OFFICIAL_LICENSE_NOTE = (
    "Converted from the official TransGAN checkpoint (VITA-Group/TransGAN). The official weights are derived from a "
    "work under a non-commercial licence (Copyright (c) 2021, Yifan Jiang; NVIDIA-style source code licence, "
    "section 3.3): use them for non-commercial research or evaluation only."
)

# Official class names of the four working generator/discriminator pairs (spec §1.2) and our preset for each.
OFFICIAL_PRESETS = {
    "cifar10": ("ViT_custom_rp", "ViT_custom_scale2_rp_noise"),
    "stl10": ("ViT_custom_rp", "ViT_custom_scale2_rp_noise"),
    "celeba_hq_256": ("Celeba256_gen", "Celeba256_dis"),
    "church_256": ("ViT_custom_local544444_256_rp_noise", "ViT_scale3_local_new_rp"),
}


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message says why and what to do."""


class WeightMismatchError(ConversionError):
    """The checkpoint's tensors do not fit the configured model. The message is a summary, the hint first, then the
    count and first keys of each kind of problem (a wrong --preset gives hundreds); `problems` holds every key."""

    SHOWN = 3

    def __init__(self, what: str, problems: dict[str, list[str]]) -> None:
        self.what, self.problems = what, {kind: entries for kind, entries in problems.items() if entries}
        summary = "; ".join(
            f"{kind} ({len(entries)}): {', '.join(entries[:self.SHOWN])}"
            + (f" and {len(entries) - self.SHOWN} more" if len(entries) > self.SHOWN else "")
            for kind, entries in self.problems.items()
        )
        super().__init__(f"The {what} weights do not match the configuration; check --preset / --official_args "
                         f"against the flags the checkpoint was trained with. {summary}.")

    @property
    def shortened(self) -> bool:
        """Whether the message leaves keys out."""
        return any(len(entries) > self.SHOWN for entries in self.problems.values())


# ---------------------------------------------------------------------------------------------------------------------
# Official flags -> configurations
# ---------------------------------------------------------------------------------------------------------------------

# The official flags the conversion reads: flag -> (type, default); flags without a default are required. Other
# flags of an official run (learning rates, data paths, ...) do not change the networks and are ignored.
_REQUIRED = object()
_FLAGS: dict[str, tuple[str, Any]] = {
    "gen_model": ("str", _REQUIRED), "dis_model": ("str", _REQUIRED), "latent_dim": ("int", _REQUIRED),
    "gf_dim": ("int", _REQUIRED), "g_depth": ("ints", _REQUIRED), "bottom_width": ("int", _REQUIRED),
    "df_dim": ("int", _REQUIRED), "d_depth": ("int", _REQUIRED), "patch_size": ("int", _REQUIRED),
    "img_size": ("int", _REQUIRED), "g_norm": ("str", "ln"), "g_act": ("str", "gelu"), "g_mlp": ("float", 4.0),
    "latent_norm": ("bool", False), "g_window_size": ("int", 16), "d_norm": ("str", "ln"), "d_act": ("str", "gelu"),
    "d_mlp": ("float", 4.0), "d_window_size": ("int", 16),
}
_KIND_NAMES = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false",
               "ints": "comma-separated integers such as \"1,2,3\" (or a list of integers)"}


def _parse_flag(kind: str, value: Any) -> Any:
    """`value` as `kind` (numbers may be strings, as on the official command line), or None if it is not one."""
    if kind == "ints":
        parts = value if isinstance(value, (list, tuple)) else str(value).split(",") if isinstance(value, (int, str)) \
            else []
        parsed = [_parse_flag("int", part) for part in parts]
        return parsed if parts and None not in parsed else None
    if kind in ("str", "bool"):
        return value if isinstance(value, str if kind == "str" else bool) else None
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value) if kind == "int" else float(value)
        except ValueError:
            return None
    if kind == "int":
        return value if isinstance(value, int) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def official_flags(args: Any) -> dict[str, Any]:
    """The flags the conversion reads, checked and typed, defaults filled in; a `ConversionError` names every
    missing or ill-typed flag, and a key that looks like a misspelt flag (it would silently fall back to the
    default)."""
    if not isinstance(args, Mapping):
        raise ConversionError(f"The official arguments must be a JSON object of flag: value pairs, got "
                              f"{type(args).__name__}.")
    missing = [flag for flag, (_, default) in _FLAGS.items() if default is _REQUIRED and flag not in args]
    if missing:
        raise ConversionError(f"The official arguments lack the flags {missing}; give the full set used for training.")
    misspelt = {key: match[0] for key in args if key not in _FLAGS
                for match in [difflib.get_close_matches(str(key), _FLAGS, n=1, cutoff=0.8)] if match}
    if misspelt:
        raise ConversionError("Unknown official flags " + ", ".join(f"{k!r} (did you mean {v!r}?)" for k, v in
                                                                    misspelt.items()) + "; fix their names.")
    flags, wrong = {}, []
    for flag, (kind, default) in _FLAGS.items():
        flags[flag] = _parse_flag(kind, args[flag]) if flag in args else default
        if flags[flag] is None:
            wrong.append(f"{flag!r} must be {_KIND_NAMES[kind]}, got {args[flag]!r}")
    if wrong:
        raise ConversionError("Bad official flags: " + "; ".join(wrong) + ".")
    return flags


def configs_from_official_args(args: Mapping[str, Any]) -> tuple[TransGANGeneratorConfig, TransGANDiscriminatorConfig]:
    """Build our configurations from the official command-line flags (as a dict, e.g. `cifar_small_args.json`)."""
    args = official_flags(args)
    shared_g = dict(
        latent_dim=args["latent_dim"],
        bottom_width=args["bottom_width"],
        hidden_size=args["gf_dim"],
        norm_type=args["g_norm"],
        hidden_act=args["g_act"],
        mlp_ratio=args["g_mlp"],
        latent_norm=args["latent_norm"],
    )
    g_depth = args["g_depth"]
    g_window = args["g_window_size"]
    gen_model = args["gen_model"]
    bw = shared_g["bottom_width"]
    if gen_model == "ViT_custom_rp":
        g = dict(depths=g_depth[:3], upsample_types=["pixel_shuffle"] * 2, window_sizes=[0, 0, 0], image_size=bw * 4)
    elif gen_model in ("ViT_custom_local544444_256_rp_noise", "ViT_custom_local544444_256_rp"):
        g = dict(depths=g_depth[:6], upsample_types=["bicubic", "bicubic", "pixel_shuffle", "pixel_shuffle",
                                                     "pixel_shuffle"],
                 window_sizes=[0, 0, 0, g_window, g_window, g_window], image_size=bw * 32,
                 noise_injection=gen_model.endswith("_noise"))
    elif gen_model == "Celeba256_gen":
        g = dict(depths=[0] + g_depth[1:6], upsample_types=["bicubic", "bicubic", "pixel_shuffle",
                                                             "updown_pixel_shuffle", "updown_pixel_shuffle"],
                 window_sizes=[0, 0, 0, g_window, g_window, g_window], image_size=bw * 32, noise_injection=True,
                 latent_cross_attention=True, num_latent_tokens=64)
    else:
        raise ConversionError(
            f"Unsupported official generator {gen_model!r}; supported: ViT_custom_rp, "
            "ViT_custom_local544444_256_rp(_noise), Celeba256_gen (the other official classes do not run with their "
            "shipped flags)."
        )
    df = args["df_dim"]
    depth = args["d_depth"]
    shared_d = dict(
        image_size=args["img_size"],
        patch_size=args["patch_size"],
        hidden_size=df,
        norm_type=args["d_norm"],
        hidden_act=args["d_act"],
        mlp_ratio=args["d_mlp"],
    )
    d_window = args["d_window_size"]
    dis_model = args["dis_model"]
    if dis_model == "ViT_custom_scale2_rp_noise":
        d = dict(patch_embed_dims=[df // 4 * 3, df // 4], depths=[depth, depth], window_sizes=[0, 0],
                 global_depths=[0, 0], noise_injection=True)
    elif dis_model == "ViT_scale3_local_new_rp":
        d = dict(patch_embed_dims=[df // 4 * 3, df // 8, df // 8], depths=[depth - 1, depth, depth + 1],
                 window_sizes=[d_window, 0, 0], global_depths=[1, 0, 0], noise_injection=False)
    elif dis_model == "Celeba256_dis":
        d = dict(patch_embed_dims=[df // 4, df // 4, df // 2], depths=[depth, depth - 1, depth + 1],
                 window_sizes=[d_window, d_window, 0], global_depths=[0, 1, 0], overlapping_first_patch=True,
                 use_relative_position_bias=False, noise_injection=False)
    else:
        raise ConversionError(
            f"Unsupported official discriminator {dis_model!r}; supported: ViT_custom_scale2_rp_noise, "
            "ViT_scale3_local_new_rp, Celeba256_dis."
        )
    try:
        return TransGANGeneratorConfig(**shared_g, **g), TransGANDiscriminatorConfig(**shared_d, **d)
    except (ValueError, TypeError) as error:
        raise ConversionError(f"The official arguments describe an invalid model: {error}") from None


def configs_from_preset(name: str) -> tuple[TransGANGeneratorConfig, TransGANDiscriminatorConfig]:
    if name not in OFFICIAL_PRESETS:
        raise ConversionError(
            f"No official checkpoint layout for preset {name!r}; choose one of {sorted(OFFICIAL_PRESETS)}."
        )
    return TransGANGeneratorConfig.from_preset(name), TransGANDiscriminatorConfig.from_preset(name)


# ---------------------------------------------------------------------------------------------------------------------
# Key mapping: our state-dict key -> official key
# ---------------------------------------------------------------------------------------------------------------------

# Inside a transformer block (both networks).
_BLOCK_RULES = [
    (r"^norm(\d)\.(weight|bias|running_mean|running_var|num_batches_tracked)$", r"norm\1.norm.\2"),
    (r"^attention\.noise_strength$", "attn.noise_strength_1"),
    (r"^attention\.", "attn."),
    (r"^cross_attention\.noise_strength$", "cross_attention.noise_strength_1"),
    (r"^cross_attention\.(q|k|v)\.", r"cross_attention.\1_transform."),
]


def _map_block(rest: str) -> str:
    for pattern, replacement in _BLOCK_RULES:
        if re.search(pattern, rest):
            return re.sub(pattern, replacement, rest)
    return rest


def _generator_block_prefix(gen_model: str, stage: int, index: int) -> str:
    if gen_model == "ViT_custom_rp":
        return f"blocks.block.{index}." if stage == 0 else f"upsample_blocks.{stage - 1}.block.{index}."
    # The 256 px generators number their stage containers from 1 (Celeba256_gen has no `blocks_1`).
    return f"blocks_{stage + 1}.block.{index}."


def official_generator_key(key: str, gen_model: str) -> str:
    """Official name of our generator state-dict key `key`."""
    if key.startswith("latent_proj."):
        return "l1." + key.split(".", 1)[1]
    if key.startswith("latent_embedding."):
        return "embedding_transform." + key.split(".", 1)[1]
    if key == "latent_position_embedding":
        return "embed_pos"
    if key.startswith("to_rgb."):
        return "deconv.0." + key.split(".", 1)[1]
    match = re.fullmatch(r"stages\.(\d+)\.position_embedding", key)
    if match:
        return f"pos_embed_{int(match.group(1)) + 1}"
    match = re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if match:
        stage, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        return _generator_block_prefix(gen_model, stage, index) + _map_block(rest)
    return key


def _discriminator_block_prefix(config: TransGANDiscriminatorConfig, scale: int, index: int) -> str:
    depth = config.depths[scale]
    if index >= depth:  # trailing global-attention blocks have their own official container
        return f"blocks_{scale + 1}1.{index - depth}."
    return f"blocks_{scale + 1}.{index}."


def official_discriminator_key(key: str, config: TransGANDiscriminatorConfig) -> str:
    """Official name of our discriminator state-dict key `key`."""
    match = re.fullmatch(r"scales\.(\d+)\.patch_embedding\.(weight|bias)", key)
    if match:
        return f"fRGB_{int(match.group(1)) + 1}.{match.group(2)}"
    match = re.fullmatch(r"scales\.(\d+)\.position_embedding", key)
    if match:
        return f"pos_embed_{int(match.group(1)) + 1}"
    match = re.fullmatch(r"scales\.(\d+)\.blocks\.(\d+)\.(.+)", key)
    if match:
        scale, index, rest = int(match.group(1)), int(match.group(2)), match.group(3)
        return _discriminator_block_prefix(config, scale, index) + _map_block(rest)
    if key.startswith("last_block."):
        return "last_block.0." + _map_block(key.split(".", 1)[1])
    match = re.fullmatch(r"norm\.(weight|bias|running_mean|running_var|num_batches_tracked)", key)
    if match:
        return f"norm.norm.{match.group(1)}"
    return key


# Official entries that carry no information for us.
_IGNORED_OFFICIAL = re.compile(r"(^|\.)relative_position_index$|^Hz_fbank$|^Hz_geom$")


def map_state_dict(
    official: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    official_key: Callable[[str], str],
    what: str,
) -> dict[str, torch.Tensor]:
    """Our state dict for `model` taken from `official`; raises `ConversionError` listing every problem."""
    official = {k.removeprefix("module."): v for k, v in official.items()}
    ours = model.state_dict()
    mapped, missing, wrong_shape, used = {}, [], [], set()
    for key, target in ours.items():
        source = official_key(key)
        if source not in official:
            missing.append(f"{source} (for {key}, shape {tuple(target.shape)})")
            continue
        used.add(source)
        value = official[source]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(target.shape):
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            wrong_shape.append(f"{source}: checkpoint {shape}, model {tuple(target.shape)}")
            continue
        mapped[key] = value.to(target.dtype)
    unmapped = sorted(k for k in official if k not in used and not _IGNORED_OFFICIAL.search(k))
    if missing or wrong_shape or unmapped:
        raise WeightMismatchError(what, {"missing keys": missing, "wrong shapes": wrong_shape,
                                         "unmapped keys": unmapped})
    nonfinite = [official_key(key) for key, value in mapped.items()
                 if value.is_floating_point() and not torch.isfinite(value).all()]
    if nonfinite:
        raise ConversionError(f"The {what} weights hold NaN or infinite values ({len(nonfinite)} tensors: "
                              f"{', '.join(nonfinite)}); the checkpoint is damaged or its training diverged.")
    return mapped


# ---------------------------------------------------------------------------------------------------------------------
# Loading and conversion
# ---------------------------------------------------------------------------------------------------------------------


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read an official training checkpoint safely (`weights_only=True`) and check its layout."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder; pass the checkpoint file in it" if path.is_dir() else "does not exist"
        raise ConversionError(f"Checkpoint file {str(path)!r} {problem}.")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says what matters
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConversionError(
            f"{str(path)!r} is not a plain official checkpoint: a weights-only load refuses it (it holds Python "
            "objects other than tensors and plain containers, which could run code). Only checkpoints saved by the "
            "official train_derived.py are supported; nothing in the file was run."
        ) from None
    except Exception as error:  # any failure of the parser on a foreign file: the file is unreadable, not our bug
        detail = str(error).splitlines()[0] if str(error) else "no details"
        raise ConversionError(
            f"{str(path)!r} cannot be read as a PyTorch checkpoint ({type(error).__name__}: {detail}); the file may be "
            "truncated or not a checkpoint. Download it again."
        ) from None
    if not isinstance(checkpoint, dict) or not any(k in checkpoint for k in ("avg_gen_state_dict", "gen_state_dict")):
        found = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"{str(path)!r} is not an official TransGAN training checkpoint: expected a dict with "
            f"'avg_gen_state_dict', 'gen_state_dict' and 'dis_state_dict', found {found}."
        )
    for key in ("avg_gen_state_dict", "gen_state_dict", "dis_state_dict"):
        state = checkpoint.get(key, {})
        if not isinstance(state, dict) or not all(isinstance(name, str) for name in state):
            raise ConversionError(f"{str(path)!r}: {key!r} is not a state dict (names -> tensors); the checkpoint is "
                                  "damaged or not from the official train_derived.py.")
    return checkpoint


def convert_checkpoint(
    checkpoint: Mapping[str, Any],
    generator_config: TransGANGeneratorConfig,
    discriminator_config: TransGANDiscriminatorConfig,
    gen_model: str,
    dis_model: str,
    weights: str = "ema",
) -> tuple[TransGANGenerator, TransGANDiscriminator | None]:
    """Models with the official weights loaded (the discriminator is `None` if the checkpoint has none)."""
    if weights not in ("ema", "raw"):
        raise ConversionError(f"--weights must be 'ema' or 'raw', got {weights!r}.")
    gen_key = "avg_gen_state_dict" if weights == "ema" else "gen_state_dict"
    if gen_key not in checkpoint:
        raise ConversionError(f"The checkpoint has no {gen_key!r} (found {sorted(map(str, checkpoint))}); try "
                              f"--weights {'raw' if weights == 'ema' else 'ema'}.")
    with torch.device("meta"):
        generator = TransGANGenerator(generator_config)
    state = map_state_dict(checkpoint[gen_key], generator, lambda k: official_generator_key(k, gen_model), "generator")
    generator.load_state_dict(state, assign=True, strict=True)
    discriminator = None
    if "dis_state_dict" in checkpoint:
        with torch.device("meta"):
            discriminator = TransGANDiscriminator(discriminator_config)
        state = map_state_dict(
            checkpoint["dis_state_dict"], discriminator,
            lambda k: official_discriminator_key(k, discriminator_config), "discriminator",
        )
        discriminator.load_state_dict(state, assign=True, strict=True)
        discriminator.eval()
    generator.eval()
    _restore_frozen_flags(generator)
    return generator, discriminator


def _restore_frozen_flags(model: torch.nn.Module) -> None:
    # `load_state_dict(assign=True)` keeps requires_grad of the loaded tensors; keep our frozen, unused parameters so.
    for name, param in model.named_parameters():
        if name.endswith("cross_attention.noise_strength"):
            param.requires_grad_(False)


def _check_paths(output_dir: Path, overwrite: bool, inputs: Mapping[str, Any]) -> None:
    """Refuse an output folder that holds (or is) one of the input files, whatever `overwrite` says: replacing the
    folder would delete the input. Without `overwrite`, refuse a non-empty one."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ConversionError(f"--output_dir {str(output_dir)!r} is a file; pass a folder.")
    outputs = {Path(os.path.abspath(output_dir)), output_dir.resolve()}
    for flag, path in inputs.items():
        if isinstance(path, (str, os.PathLike)):
            for candidate in {Path(os.path.abspath(path)), Path(path).resolve()}:
                if any(candidate == out or out in candidate.parents for out in outputs):
                    raise ConversionError(
                        f"{flag} {str(path)!r} lies inside --output_dir {str(output_dir)!r}, which the conversion "
                        "replaces; write the pipeline to another folder."
                    )
    if output_dir.exists() and any(output_dir.iterdir()) and not overwrite:
        raise ConversionError(
            f"--output_dir {str(output_dir)!r} exists and is not an empty folder; pass --overwrite or pick another."
        )


def _write_atomically(output_dir: Path, write: Callable[[Path], None]) -> None:
    """Write into a staging folder beside `output_dir`, then rename the result into place (replacing every old
    entry): a failure leaves neither partial output nor a half-replaced folder."""
    output_dir = output_dir.resolve()  # a symlinked folder: stage beside the real one, so every move is a rename
    remove_stale_staging_folders(output_dir.parent, output_dir.name)
    with staging_folder(output_dir) as staging:
        write(staging)
        old = [entry.name for entry in output_dir.iterdir()] if output_dir.is_dir() else []
        move_entries_into_place(staging, output_dir, sorted({entry.name for entry in staging.iterdir()} | set(old)))


def convert(
    checkpoint_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    preset: str | None = None,
    official_args: Mapping[str, Any] | str | os.PathLike | None = None,
    weights: str = "ema",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Convert an official checkpoint into a `TransGANPipeline` folder (`model_index.json`, `generator/`,
    `discriminator/`, and a `README.md` model card that carries the official non-commercial licence). `progress`
    shows the stages (reading, mapping, writing: seconds each for the 256 px checkpoints) in a bar on stderr. It
    starts before the checkpoint is checked, so it is drawn on a terminal only and removed at the end: an error
    stays the only line printed."""
    if (preset is None) == (official_args is None):
        raise ConversionError("Give exactly one of --preset or --official_args.")
    output_dir = Path(output_dir)
    _check_paths(output_dir, overwrite, {"--checkpoint": checkpoint_path, "--official_args": official_args})
    if official_args is not None:
        if not isinstance(official_args, Mapping):
            try:
                official_args = json.loads(Path(official_args).read_text(encoding="utf-8"))
            except (OSError, ValueError) as error:  # ValueError: not JSON, or not UTF-8 text
                raise ConversionError(f"Cannot read --official_args {str(official_args)!r}: {error}") from None
        generator_config, discriminator_config = configs_from_official_args(official_args)
        gen_model, dis_model = official_args["gen_model"], official_args["dis_model"]
    else:
        generator_config, discriminator_config = configs_from_preset(preset)
        gen_model, dis_model = OFFICIAL_PRESETS[preset]
    with tqdm(total=3, desc="convert", unit="stage", disable=None if progress else True, leave=False) as bar:
        bar.set_postfix_str("reading the checkpoint")
        checkpoint = load_official_checkpoint(checkpoint_path)
        if checkpoint.get("gen_model", gen_model) != gen_model or checkpoint.get("dis_model", dis_model) != dis_model:
            raise ConversionError(
                f"The checkpoint was trained with {checkpoint.get('gen_model')} / {checkpoint.get('dis_model')}, but "
                f"the configuration describes {gen_model} / {dis_model}; pick the matching --preset or --official_args."
            )
        bar.update()
        bar.set_postfix_str("mapping the weights")
        generator, discriminator = convert_checkpoint(
            checkpoint, generator_config, discriminator_config, gen_model, dis_model, weights
        )
        bar.update()
        bar.set_postfix_str("writing the pipeline")
        conversion = {
            "Source": f"official TransGAN checkpoint `{Path(checkpoint_path).name}` ({gen_model} / {dis_model})",
            "Generator weights": "EMA (`avg_gen_state_dict`)" if weights == "ema" else "raw (`gen_state_dict`)",
            "Converted with": f"`transgan convert` (transgan_hf {_package_version()})",
        }
        pipeline = TransGANPipeline(generator=generator, discriminator=discriminator)
        model_card_kwargs = {"converted_from_official": True, "training": conversion}
        _write_atomically(output_dir, lambda folder: pipeline.save_pretrained(folder, model_card_kwargs))
        bar.update()
    return output_dir


def _package_version() -> str:
    from . import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    """`python -m transgan_hf.convert_official ...` is `transgan convert ...`."""
    from .cli import main as cli_main

    return cli_main(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
