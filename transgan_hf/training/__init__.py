"""Training TransGAN with Accelerate: the library behind `training/train.py` (needs the `[train]` extra).

- `args.py`: the command line's flags, their range checks and the preset's recipe (`presets.py`).
- `loop.py`: `main(argv)`: turns the flags into the parts below and runs the training loop.
- `trainer.py`: `GANTrainer` (the official update rules), the NaN/inf monitor, the networks and optimisers.
- `losses.py`, `augment.py` (DiffAugment), `ema.py`: the pieces of an update.
- `dataloader.py`: the training images, in an order that a resumed run continues.
- `checkpointing.py`: atomic checkpoints, exact resume, and what a run leaves in its output folder.
- `reporting.py`: `training_log.jsonl` and the fixed-noise sample grids.
- `evaluation.py`: metrics of the EMA generator during training (`--eval_steps`) and custom evaluation hooks.
- `export.py`: the final pipeline folder, its model card and the upload to the Hub.
- `distributed.py`: several processes: joining them on CPUs, errors that stop all of them alike.

`import transgan_hf` does not import this package, so that sampling needs none of the training dependencies.
"""
