#!/usr/bin/env python
"""Train TransGAN with Accelerate on a Hugging Face dataset or an image folder.

    accelerate launch training/train.py                         # tiny preset on MNIST-5k: digits on a laptop CPU
    accelerate launch training/train.py --preset cifar10 --dataset_name cifar10 --output_dir runs/cifar10
    accelerate launch --multi_gpu --num_processes 8 training/train.py --preset stl10 --train_data_dir ./stl10
    accelerate launch training/train.py ... --resume_from_checkpoint latest

The command line only: the training library is `transgan_hf.training` (flags in `args.py`, the run in `loop.py`,
the update rules in `trainer.py`); see training/README.md.
"""

import os
import sys

# Idle OpenMP threads sleep instead of spinning: on a busy CPU (other programs, or several training processes)
# spinning threads that wait for a descheduled partner made small kernels up to 50x slower. Read when torch loads,
# so it must come before the import below; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from transgan_hf.training.loop import cli_main  # noqa: E402  (after the OpenMP setting)

if __name__ == "__main__":
    sys.exit(cli_main(script=__file__))
