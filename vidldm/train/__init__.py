"""Training: one loop on accelerate for every stage (temporal, image, vae, decoder)."""

from vidldm.train.config import Config, load_config
from vidldm.train.trainer import Trainer, run_training

__all__ = ["Config", "Trainer", "load_config", "run_training"]
