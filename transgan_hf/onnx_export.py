"""ONNX export of the TransGAN networks, and sampling from an exported generator with ONNX Runtime (CPU).

`export_onnx(model, path)` writes one network as a single ONNX file whose batch dimension is dynamic:

- generator: input `latents` `(batch, latent_dim)`, output `images` `(batch, channels, size, size)`: the raw output of
  `TransGANGenerator` (nominally in [-1, 1]; `(images / 2 + 0.5).clip(0, 1)` gives the pipeline's pixels);
- discriminator: input `pixel_values` `(batch, channels, size, size)` in [-1, 1], output `logits` `(batch, 1)`.

All float32. A network with noise injection (`config.noise_injection`) adds one standard-normal value per token before
every self-attention. An ONNX graph has no random state that could replay a seeded `torch.Generator`, so these values
are inputs too: `noise_0`, `noise_1`, ..., one per transformer block in the order the forward runs the blocks (stage by
stage, block by block; the discriminator's final block last), each `(batch, tokens, 1)` with the tokens of that block
(its grid, plus the cls token where it is in the sequence). Feeding the values that a seeded PyTorch call draws
(`draw_noise_inputs`) gives that call's output; zeros turn the noise off. Networks without noise injection have only
their main input.

Exporter: `torch.onnx.export(..., dynamo=True)`, the default of torch >= 2.9: it captures the network with
`torch.export` and translates it with onnxscript (installed by the `onnx` extra; nothing is downloaded). The older
TorchScript exporter (`dynamo=False`, deprecated) is not used: it writes the example's batch size into the reshapes,
so the file would run at that batch size only. Opset `OPSET` (18) is the one torch's ONNX function library is written
in, so no version conversion runs; ONNX Runtime >= 1.14 and every other current runtime support it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image
from torch import nn

from .atomic_files import atomic_write
from .modeling_transgan import TransGANPreTrainedModel, draw_token_noise
from .sampling import draw_latents, eval_mode

OPSET = 18
OUTPUT_NAMES = {"latents": "images", "pixel_values": "logits"}
"""The output of each network, by its main input (`main_input_name`)."""
EXPORT_BATCH_SIZE = 2
"""Batch of the example inputs the exporter traces with (not 1, which `torch.export` would specialise on)."""
PARITY_TOLERANCE = 1e-4
"""Largest absolute difference between ONNX Runtime's and PyTorch's float32 outputs expected of an export (checked by
`transgan export` and the tests)."""


# ---------------------------------------------------------------------------------------------------------------------
# Noise as inputs
# ---------------------------------------------------------------------------------------------------------------------


class NoiseInputs:
    """A noise source for a network's `noise_generator=`: hands out the given per-block noise tensors in the order the
    forward draws them (the `draw` protocol of `BatchNoiseRows`), instead of drawing random values."""

    def __init__(self, noise: Sequence[torch.Tensor]) -> None:
        self.noise = list(noise)
        self.drawn = 0

    def draw(self, batch_size: int, num_tokens: int) -> torch.Tensor:
        if self.drawn == len(self.noise):
            raise ValueError(f"The network draws more than the {len(self.noise)} noise tensors given.")
        noise = self.noise[self.drawn]
        if noise.shape[1:] != (num_tokens, 1):
            raise ValueError(f"Noise input {self.drawn} has shape {tuple(noise.shape)}; the block needs "
                             f"(batch, {num_tokens}, 1).")
        self.drawn += 1
        return noise


class NoiseRecorder:
    """A noise source that records the token count of every draw and returns zeros."""

    def __init__(self) -> None:
        self.token_counts: list[int] = []

    def draw(self, batch_size: int, num_tokens: int) -> torch.Tensor:
        self.token_counts.append(num_tokens)
        return torch.zeros(batch_size, num_tokens, 1)


def example_inputs(model: TransGANPreTrainedModel, batch_size: int) -> torch.Tensor:
    """Zeros of the shape of `model`'s main input (latents or images)."""
    config = model.config
    if model.main_input_name == "latents":
        shape = (batch_size, config.latent_dim)
    else:
        shape = (batch_size, config.in_channels, config.image_size, config.image_size)
    return torch.zeros(shape, device=model.device, dtype=model.dtype)


@torch.no_grad()
def noise_token_counts(model: TransGANPreTrainedModel) -> list[int]:
    """The tokens of every noise draw of one forward pass of `model`, in order (empty without noise injection)."""
    recorder = NoiseRecorder()
    with eval_mode(model):
        model(example_inputs(model, 1), noise_generator=recorder)
    return recorder.token_counts


def draw_noise_inputs(
    token_counts: Sequence[int], batch_size: int, generator: torch.Generator | list[torch.Generator] | None
) -> list[torch.Tensor]:
    """The noise inputs that a PyTorch forward pass would draw from `generator` (one, or one per sample), in order: a
    seeded call's latents drawn first, then these, give the seeded PyTorch call's output."""
    return [draw_token_noise(batch_size, tokens, generator, torch.device("cpu"), torch.float32)
            for tokens in token_counts]


class NetworkWithNoiseInputs(nn.Module):
    """`model` as the ONNX graph sees it: `(main input, *noise) -> images or logits` (a plain tensor)."""

    def __init__(self, model: TransGANPreTrainedModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, *noise: torch.Tensor) -> torch.Tensor:
        return self.model(inputs, noise_generator=NoiseInputs(noise) if noise else None, return_dict=False)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------------


def require_packages(*modules: str) -> None:
    """`ImportError` with the install command when a module of the `onnx` extra is missing."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(f"ONNX export and ONNX Runtime sampling need {', '.join(missing)}; install them with "
                          "`pip install 'transgan-hf[onnx]'`.")


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's notices (deprecations, skipped torchvision ops, per-step progress lines)."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def export_onnx(model: TransGANPreTrainedModel, path: str | os.PathLike, opset: int = OPSET) -> list[str]:
    """Write `model` (a float32 `TransGANGenerator` or `TransGANDiscriminator`) to the ONNX file `path` (atomically),
    with a dynamic batch dimension and the noise inputs described in this module's docstring; returns the input
    names. The file's metadata holds the network's configuration (`transgan_config`)."""
    require_packages("onnx", "onnxscript")
    if model.dtype != torch.float32:
        raise ValueError(f"Export a float32 model, not {model.dtype}: load it with dtype=torch.float32.")
    input_name = model.main_input_name
    token_counts = noise_token_counts(model)
    names = [input_name] + [f"noise_{index}" for index in range(len(token_counts))]
    inputs = example_inputs(model, EXPORT_BATCH_SIZE)
    noise = [torch.zeros(EXPORT_BATCH_SIZE, tokens, 1, device=model.device) for tokens in token_counts]
    batch = torch.export.Dim("batch")
    dynamic_shapes = ({0: batch}, tuple({0: batch} for _ in noise)) if noise else ({0: batch},)
    with torch.no_grad(), eval_mode(model), quiet_exporter():
        program = torch.onnx.export(
            NetworkWithNoiseInputs(model), (inputs, *noise), input_names=names,
            output_names=[OUTPUT_NAMES[input_name]], dynamic_shapes=dynamic_shapes, opset_version=opset, dynamo=True,
            external_data=False, verbose=False,
        )
    program.model.doc_string = (
        f"{type(model).__name__} exported by transgan_hf. Inputs: {input_name}"
        + (f", noise_0..noise_{len(noise) - 1}: per-token standard-normal noise of each transformer block, "
           "(batch, tokens, 1), in forward order" if noise else "")
        + f". Output: {OUTPUT_NAMES[input_name]}."
    )
    program.model.metadata_props["transgan_config"] = model.config.to_json_string(use_diff=False)
    path = Path(path)
    with atomic_write(path) as temporary:
        program.save(temporary, external_data=False)
    return names


# ---------------------------------------------------------------------------------------------------------------------
# ONNX Runtime
# ---------------------------------------------------------------------------------------------------------------------


def default_num_threads() -> int:
    """The cores this process may run on (ONNX Runtime's own default counts every core of the machine)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class OnnxRuntimeNetwork:
    """An exported network in an ONNX Runtime CPU session: `network(inputs, noise)` -> the output as a tensor."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None) -> None:
        require_packages("onnxruntime")
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # An explicit count: ONNX Runtime's default also pins its threads to cores, whatever the process's affinity.
        options.intra_op_num_threads = num_threads or default_num_threads()
        options.log_severity_level = 3  # errors only
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"{self.path!r} does not exist.")
        try:
            self.session = onnxruntime.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime's own exception types (InvalidProtobuf, Fail, ...)
            raise ValueError(f"{self.path!r} is not an ONNX model that ONNX Runtime can load: "
                             f"{str(error).splitlines()[0]}") from None
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        noise_inputs = {node.name: node.shape for node in inputs[1:]}
        expected = [f"noise_{index}" for index in range(len(noise_inputs))]
        if self.input_name not in OUTPUT_NAMES or list(noise_inputs) != expected:
            raise ValueError(f"{self.path!r} is not a TransGAN network exported by `transgan export` (its inputs are "
                             f"{', '.join(node.name for node in inputs)}).")
        self.input_shape = tuple(inputs[0].shape[1:])
        self.noise_tokens = [shape[1] for shape in noise_inputs.values()]

    def __call__(self, inputs: torch.Tensor, noise: Sequence[torch.Tensor] = ()) -> torch.Tensor:
        if len(noise) != len(self.noise_tokens):
            raise ValueError(f"{self.path!r} takes {len(self.noise_tokens)} noise inputs, got {len(noise)}.")
        feed = {self.input_name: to_numpy(inputs)}
        feed.update((f"noise_{index}", to_numpy(tensor)) for index, tensor in enumerate(noise))
        return torch.from_numpy(self.session.run(None, feed)[0])


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).contiguous().numpy()


class OnnxRuntimeGenerator(OnnxRuntimeNetwork):
    """An exported generator: `sample` draws latents and noise as `TransGANPipeline` does for the same seeds."""

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None) -> None:
        super().__init__(path, num_threads)
        if self.input_name != "latents":
            raise ValueError(f"{self.path!r} is a discriminator, not a generator (its input is {self.input_name}).")
        self.latent_dim = self.input_shape[0]
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)  # as TransGANPipeline's

    def sample(self, generators: list[torch.Generator], truncation: float | None = None) -> torch.Tensor:
        """Raw images for one seeded generator per image: image `i` gets the latent (plain or truncated) and noise
        that `TransGANPipeline(generator=generators)` draws for it, so the same image up to round-off."""
        latents = torch.cat([draw_latents((1, self.latent_dim), g, truncation, torch.device("cpu"))
                             for g in generators])
        return self(latents, draw_noise_inputs(self.noise_tokens, len(generators), generators))

    def sample_images(self, generators: list[torch.Generator], truncation: float | None = None) -> list[Image.Image]:
        """`sample` as PIL images, post-processed as `TransGANPipeline(output_type="pil")` does."""
        return self.image_processor.postprocess(self.sample(generators, truncation), output_type="pil")


def max_abs_difference(
    model: TransGANPreTrainedModel, network: OnnxRuntimeNetwork, batch_size: int = 3, seed: int = 0
) -> float:
    """Largest absolute difference between PyTorch's and ONNX Runtime's outputs for random inputs and noise."""
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(example_inputs(model, batch_size).shape, generator=generator).to(model.device, model.dtype)
    noise = draw_noise_inputs(network.noise_tokens, batch_size, generator)
    with torch.no_grad(), eval_mode(model):
        expected = model(inputs, noise_generator=NoiseInputs([n.to(model.device) for n in noise]), return_dict=False)
    return (network(inputs, noise) - expected[0].float().cpu()).abs().max().item()


__all__ = [
    "OPSET",
    "NoiseInputs",
    "OnnxRuntimeGenerator",
    "OnnxRuntimeNetwork",
    "draw_noise_inputs",
    "export_onnx",
    "max_abs_difference",
    "noise_token_counts",
]
