"""transgan_hf: TransGAN (pure-transformer GAN) as Hugging Face `transformers` models.

Importing the package registers the configurations and models with `AutoConfig` / `AutoModel`.
"""

from pathlib import Path

from transformers import AutoConfig, AutoModel

from .configuration_transgan import TransGANDiscriminatorConfig, TransGANGeneratorConfig
from .modeling_transgan import (
    TransGANDiscriminator,
    TransGANDiscriminatorOutput,
    TransGANGenerator,
    TransGANGeneratorOutput,
    TransGANPreTrainedModel,
)
from .pipeline_transgan import TransGANPipeline

__version__ = "0.1.0"

DEMO_MODEL_PATH = str(Path(__file__).resolve().parent / "demo")
"""The demo pipeline bundled with the package (the `tiny` preset trained on the MNIST-5k digits; see its README.md):
`TransGANPipeline.from_pretrained(transgan_hf.DEMO_MODEL_PATH)` works offline. `transgan generate` and the Space use
it by default."""

AutoConfig.register(TransGANGeneratorConfig.model_type, TransGANGeneratorConfig, exist_ok=True)
AutoConfig.register(TransGANDiscriminatorConfig.model_type, TransGANDiscriminatorConfig, exist_ok=True)
AutoModel.register(TransGANGeneratorConfig, TransGANGenerator, exist_ok=True)
AutoModel.register(TransGANDiscriminatorConfig, TransGANDiscriminator, exist_ok=True)

__all__ = [
    "DEMO_MODEL_PATH",
    "TransGANDiscriminator",
    "TransGANDiscriminatorConfig",
    "TransGANDiscriminatorOutput",
    "TransGANGenerator",
    "TransGANGeneratorConfig",
    "TransGANGeneratorOutput",
    "TransGANPipeline",
    "TransGANPreTrainedModel",
]
