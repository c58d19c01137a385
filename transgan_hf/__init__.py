"""transgan_hf: TransGAN (pure-transformer GAN) as Hugging Face `transformers` models.

Importing the package registers the configurations and models with `AutoConfig` / `AutoModel`.
"""

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

AutoConfig.register(TransGANGeneratorConfig.model_type, TransGANGeneratorConfig, exist_ok=True)
AutoConfig.register(TransGANDiscriminatorConfig.model_type, TransGANDiscriminatorConfig, exist_ok=True)
AutoModel.register(TransGANGeneratorConfig, TransGANGenerator, exist_ok=True)
AutoModel.register(TransGANDiscriminatorConfig, TransGANDiscriminator, exist_ok=True)

__all__ = [
    "TransGANDiscriminator",
    "TransGANDiscriminatorConfig",
    "TransGANDiscriminatorOutput",
    "TransGANGenerator",
    "TransGANGeneratorConfig",
    "TransGANGeneratorOutput",
    "TransGANPipeline",
    "TransGANPreTrainedModel",
]
