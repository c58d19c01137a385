"""The training run behind `training/train.py`: `main(argv)` turns the flags into the parts of this package and runs
the loop (`trainer.py` has the update rules).

Output (`--output_dir`): `samples/step_XXXXXX.png` (fixed-noise grids of the EMA generator), `logs/` (TensorBoard),
`training_log.jsonl`, `checkpoint-N/` (resumable), and at the end `pipeline/`: a `TransGANPipeline` folder with the
EMA generator, the discriminator, a model card and `samples.png`. `--push_to_hub --hub_model_id org/name` uploads
that folder. An `--output_dir` that holds a previous run is refused unless it is resumed (`--resume_from_checkpoint`)
or replaced (`--overwrite_output_dir`). The final checkpoint and the pipeline are written before the final sample
grid, evaluation and upload, whose failure is only a warning.

Bad input (a flag out of range, a missing dataset, a checkpoint of another architecture, ...) stops the run before
anything is written, with one `error:` line and exit code 2, printed by the main process only (`cli_main`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, broadcast
from tqdm.auto import tqdm

from ..cli import CommandError
from ..cpu_memory import reuse_freed_cpu_memory
from ..data import CorruptImageError
from ..pipeline_transgan import TransGANPipeline
from .args import (
    check_batch_sizes,
    load_model_configs,
    parse_args,
    real_images_per_step,
    run_settings,
    training_recipe,
)
from .augment import overfitting_warning
from .checkpointing import (
    RECORDED_SETTINGS,
    Checkpointer,
    TrainingState,
    check_output_dir,
    check_resume_settings,
    prepare_output_dir,
    resolve_resume_path,
)
from .dataloader import ImageSource, ImageStream, batches, build_dataloader
from .distributed import check_shared_output_dir, needs_cpu_flag, on_main_process
from .evaluation import EvaluationContext, EvaluationHook, EvaluationSettings, MetricEvaluation
from .export import RunDescription, complete_model_card, describe_hardware, export_pipeline, upload_pipeline
from .reporting import SampleWriter, TrainingLog
from .trainer import GANTrainer, NonFiniteError, apply_adam_settings, build_models, build_optimizers

logger = get_logger(__name__, log_level="INFO")

ENTRY_SCRIPT = Path(__file__).resolve().parents[2] / "training" / "train.py"
"""The script the model card's "exact command" names when `main` is called without `script` (from Python)."""
OTHER_RANK_GRACE_SECONDS = 20
"""How long a process other than the main one waits before reporting an error itself (see `cli_main`)."""


class ProgressBarLogHandler(logging.StreamHandler):
    """Log lines on stderr through `tqdm.write`, which lifts the progress bar off its line first and redraws it
    after: a line logged during the loop (an evaluation, a warning) would otherwise be glued onto the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


@dataclass
class TrainingResult:
    output_dir: Path
    pipeline_dir: Path
    samples_image: Path | None
    step: int
    kimg: float


def configure_cpu_memory(enabled: bool, device: torch.device) -> None:
    """`--cpu_memory_reuse` (default on) for a CPU run: see `transgan_hf.cpu_memory`."""
    if enabled and device.type == "cpu" and not reuse_freed_cpu_memory():
        logger.info("--cpu_memory_reuse has no effect here (the C library is not glibc).")


def launch_command(argv: Sequence[str], num_processes: int, script: str | os.PathLike) -> str:
    """The command line of this run, for the model card: `accelerate launch [--multi_gpu ...] SCRIPT FLAGS`."""
    script = Path(script).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    launcher = "accelerate launch" + (f" --multi_gpu --num_processes {num_processes}" if num_processes > 1 else "")
    return " ".join([launcher, str(script), shlex.join(argv)]).strip()


def image_source(args: argparse.Namespace) -> ImageSource:
    """The data flags."""
    return ImageSource(dataset_name=args.dataset_name, train_data_dir=args.train_data_dir,
                       dataset_config_name=args.dataset_config_name, image_column=args.image_column,
                       cache_dir=args.cache_dir)


def evaluation_settings(args: argparse.Namespace, num_processes: int) -> EvaluationSettings:
    """The `--eval_*` flags; the batch defaults to the generator's training batch per process, known to fit."""
    return EvaluationSettings(
        every_steps=args.eval_steps, num_images=args.eval_num_images, metrics=args.eval_metrics,
        feature_extractor=args.eval_feature_extractor, inception_weights=args.eval_inception_weights,
        reference=args.eval_reference, training_images=image_source(args), resolution=args.resolution,
        batch_size=args.eval_batch_size or max(1, args.gen_batch_size // num_processes), seed=args.seed,
    )


def run_description(args: argparse.Namespace, accelerator: Accelerator) -> RunDescription:
    """What the model card says about the run (the hardware as it is at the end of the run)."""
    return RunDescription(
        preset=args.preset, recipe=training_recipe(args), images=image_source(args), seed=args.seed,
        hardware=describe_hardware(accelerator),
        official_d_grad_leak=args.official_d_grad_leak, mixed_precision=args.mixed_precision, license=args.license,
        eval_reference=args.eval_reference, repo_id=args.hub_model_id,
    )


def out_of_time(accelerator: Accelerator, trained: float, max_train_minutes: float | None) -> bool:
    """Whether `--max_train_minutes` is reached after `trained` seconds of training; the main process decides (the
    processes' clocks differ) and the others follow, so that all stop after the same step."""
    if max_train_minutes is None:
        return False
    if accelerator.num_processes == 1:  # no device tensor, no synchronisation
        return trained >= max_train_minutes * 60
    reached = torch.tensor([float(trained >= max_train_minutes * 60)], device=accelerator.device)
    return bool(broadcast(reached, from_process=0).item())


def main(argv: Sequence[str] | None = None, evaluation_hooks: Sequence[EvaluationHook] = (),
         script: str | os.PathLike | None = None) -> TrainingResult:
    """Train; `evaluation_hooks` run besides the `--eval_steps` evaluation (e.g. custom metrics in tests); `script`
    is the entry point to name in the model card's command (default: `training/train.py`).

    Every input is checked before the output folder is touched (flags, --output_dir, configs, the checkpoint to resume,
    the data, the evaluation network). The final checkpoint and pipeline are written before the end-of-run extras
    (final sample grid, evaluation, model card additions, upload), whose failure is only a warning.
    """
    # Inputs: flags, output folder, architectures, checkpoint to resume, data, evaluation network.
    args = parse_args(argv)
    overwritten = check_output_dir(args.output_dir, args.logging_dir, resume=bool(args.resume_from_checkpoint),
                                   overwrite=args.overwrite_output_dir)
    generator_config, discriminator_config = load_model_configs(args)
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir),
                                            logging_dir=str(output_dir / args.logging_dir)),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        cpu=needs_cpu_flag(),
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.WARNING,
                        handlers=[ProgressBarLogHandler()])
    transformers.utils.logging.disable_progress_bar()  # one "Writing model shards" bar per saved model otherwise
    check_batch_sizes(args, accelerator.num_processes)
    settings = run_settings(args, accelerator.num_processes)
    recipe = training_recipe(args)
    last_checkpoint, saved_settings = None, {}
    if args.resume_from_checkpoint:
        last_checkpoint = resolve_resume_path(args.output_dir, args.resume_from_checkpoint)
        if last_checkpoint is not None:
            saved_settings = check_resume_settings(last_checkpoint, settings, (generator_config, discriminator_config))
    if args.allow_tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
    configure_cpu_memory(args.cpu_memory_reuse, accelerator.device)
    loaders, stream = [], None  # a DataLoader for Accelerate to prepare, or a stream each process reads itself
    data_options = dict(resolution=args.resolution, batch_size=args.train_batch_size, seed=args.seed,
                        center_crop=args.center_crop, random_flip=args.random_flip,
                        skip_corrupt_images=args.skip_corrupt_images, num_workers=args.dataloader_num_workers)
    if args.streaming:
        stream = ImageStream.build(accelerator, image_source(args), buffer_size=args.shuffle_buffer_size,
                                   **data_options)
        images_description = stream.describe()
    else:
        dataloader, transform, num_images, num_skipped = build_dataloader(accelerator, image_source(args),
                                                                          **data_options)
        loaders = [dataloader]
        images_description = f"{num_images} images ({num_skipped} unreadable skipped)"
        images_seen = args.max_train_steps * real_images_per_step(args)
        if (warning := overfitting_warning(recipe.diffaug_policy, images_seen, num_images)) is not None:
            logger.warning(warning)
    metric_evaluation = (MetricEvaluation(accelerator, evaluation_settings(args, accelerator.num_processes))
                         if args.eval_steps else None)  # fails before training

    # The parts: networks, optimisers, trainer, checkpoints, the EMA pipeline.
    generator, discriminator, ema = build_models(
        generator_config, discriminator_config, accelerator.device, seed=args.seed, loss=recipe.loss,
        gradient_checkpointing=args.gradient_checkpointing, compile=args.compile,
    )
    generator_optimizer, discriminator_optimizer = build_optimizers(generator, discriminator, recipe)
    generator, discriminator, generator_optimizer, discriminator_optimizer, *loaders = accelerator.prepare(
        generator, discriminator, generator_optimizer, discriminator_optimizer, *loaders
    )
    trainer = GANTrainer(accelerator, generator, discriminator, generator_optimizer, discriminator_optimizer, ema,
                         recipe, seed=args.seed,
                         official_d_grad_leak=args.official_d_grad_leak,
                         gradient_checkpointing=args.gradient_checkpointing)
    checkpointer = Checkpointer(accelerator, output_dir, ema, trainer.random_generators, discriminator,
                                settings=settings, total_limit=args.checkpoints_total_limit)
    pipeline = TransGANPipeline(generator=ema.model, discriminator=trainer.plain_discriminator)

    # The run's state: a fresh start or the checkpoint to resume; logs and sample grids.
    on_main_process(accelerator, lambda: prepare_output_dir(output_dir, overwritten))  # the first write there
    check_shared_output_dir(accelerator, output_dir)
    state = TrainingState()
    if last_checkpoint is not None:
        checkpointer.load(last_checkpoint, state)
        for name in RECORDED_SETTINGS:  # a checkpoint older than the record ran with the settings saved beside it
            state.settings_history.setdefault(name, [[0, saved_settings.get(name, getattr(recipe, name))]])
        apply_adam_settings((generator_optimizer, discriminator_optimizer), recipe)
        logger.info(f"Resumed from {last_checkpoint} at step {state.step} "
                    f"({state.kimg(args.train_batch_size):.1f} kimg).")
    elif args.resume_from_checkpoint:
        logger.info(f"No checkpoint in {output_dir} yet; starting from scratch.")
    for name in RECORDED_SETTINGS:
        history, value = state.settings_history.setdefault(name, []), getattr(recipe, name)
        if not history or history[-1][1] != value:
            if history:
                logger.info(f"--{name} {history[-1][1]} -> {value} from step {state.step}.")
            history.append([state.step, value])
    state.commands.append(launch_command(args.argv, accelerator.num_processes, script or ENTRY_SCRIPT))
    training_log = TrainingLog(accelerator, output_dir, state.step)
    evaluation_hooks = [*evaluation_hooks, *([metric_evaluation] if metric_evaluation else [])]

    if accelerator.is_main_process:
        accelerator.init_trackers("transgan", config={k: v for k, v in settings.items()
                                                      if isinstance(v, (int, float, str, bool))})
    iterations_per_step = args.n_critic * args.gradient_accumulation_steps
    logger.info(
        f"{images_description}, {accelerator.num_processes} process(es) on "
        f"{accelerator.device}; {args.max_train_steps} steps of 1 G update + {args.n_critic} D updates; global "
        f"batches D {args.train_batch_size} x {args.gradient_accumulation_steps}, G {args.gen_batch_size} x "
        f"{args.gen_gradient_accumulation_steps}; D gradients during G update: "
        f"{'leak into the next D update (official)' if args.official_d_grad_leak else 'frozen'}."
    )
    write_samples = SampleWriter(accelerator, pipeline, output_dir / "samples", args.num_sample_images, args.seed,
                                 batch_size=trainer.g_batch)

    def run_evaluation(step: int, final: bool) -> None:
        for hook in evaluation_hooks:
            if final or step % hook.every_steps == 0:
                context = EvaluationContext(accelerator, pipeline, generator, discriminator, step,
                                            state.kimg(args.train_batch_size), settings)
                results = {f"eval/{name}": value for name, value in hook(context).items()}
                accelerator.log({**results, "progress/train_seconds": trained}, step=step)
                training_log.write(step, {"progress/kimg": context.kimg, "progress/train_seconds": trained, **results})

    # The loop: one step = one G update and `n_critic` D updates; logs, checkpoints, grids and evaluations between.
    progress = tqdm(total=args.max_train_steps, initial=state.step, desc="steps", unit="step",
                    disable=not accelerator.is_local_main_process, dynamic_ncols=True)
    data = stream.batches(state) if stream else batches(accelerator, loaders[0], transform, state)
    interval_start, interval_kimg, overhead = time.perf_counter(), state.kimg(args.train_batch_size), 0.0
    segment_start, segment_seconds = time.perf_counter(), state.train_seconds
    trained = state.train_seconds - state.overhead_seconds  # progress/train_seconds at the last step
    beta = None
    final = state.step >= args.max_train_steps or out_of_time(accelerator, trained, args.max_train_minutes)
    while not final:
        step = state.step + 1
        for index in range(iterations_per_step):
            real = next(data)
            update_d = (index + 1) % args.gradient_accumulation_steps == 0
            d_update = state.iteration // args.gradient_accumulation_steps  # counted over the whole run
            trainer.discriminator_iteration(real, step, update=update_d, penalize=d_update % args.gp_interval == 0)
            if index == 0:
                trainer.generator_update(step)
                beta = trainer.update_ema(cur_nimg=state.iteration * args.train_batch_size)
            state.iteration += 1
        state.step = step
        state.train_seconds = segment_seconds + time.perf_counter() - segment_start
        trained = state.train_seconds - state.overhead_seconds
        progress.update(1)
        final = step == args.max_train_steps or out_of_time(accelerator, trained, args.max_train_minutes)

        if step % args.logging_steps == 0 or step % args.checkpointing_steps == 0 or final:
            trainer.monitor.check(accelerator, last_checkpoint)  # one check before the log and the checkpoint
        if step % args.logging_steps == 0 or final:
            kimg = state.kimg(args.train_batch_size)
            seconds = time.perf_counter() - interval_start - overhead
            logs = trainer.pop_means()
            logs.update({"progress/kimg": kimg, "progress/train_seconds": trained, "ema/beta": beta,
                         "lr": args.learning_rate, "speed/sec_per_kimg": seconds / max(kimg - interval_kimg, 1e-9)})
            accelerator.log(logs, step=step)
            training_log.write(step, logs)
            progress.set_postfix(kimg=f"{kimg:.1f}", d_loss=f"{logs['loss/discriminator']:.3f}",
                                 g_loss=f"{logs['loss/generator']:.3f}",
                                 sec_per_kimg=f"{logs['speed/sec_per_kimg']:.1f}", refresh=False)
            interval_start, interval_kimg, overhead = time.perf_counter(), kimg, 0.0
        started = time.perf_counter()
        if step % args.checkpointing_steps == 0 or final:  # before the grid and evaluation, which may fail
            last_checkpoint = checkpointer.save(state)
        if not final:  # the last step's grid and evaluation come after the pipeline export
            if step % args.save_images_steps == 0:
                write_samples(step)
            run_evaluation(step, final=False)
        elapsed = time.perf_counter() - started
        overhead += elapsed
        state.overhead_seconds += elapsed  # after the checkpoint: a resumed run continues from the step's values
    progress.close()

    # The run is saved (final checkpoint, then the pipeline) before the end-of-run extras, which only add to it.
    trainer.monitor.check(accelerator, last_checkpoint)
    pipeline_dir = output_dir / "pipeline"
    run = run_description(args, accelerator)
    if accelerator.is_main_process:  # with the code for diffusers alone when it is to be published
        export_pipeline(pipeline, pipeline_dir, run, state, remote_code=args.push_to_hub)
    accelerator.wait_for_everyone()

    def extra(what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except Exception as error:  # the run is saved: report and go on
            if accelerator.is_main_process:
                print(f"warning: {what} failed ({type(error).__name__}: {' '.join(str(error).split())}); the run is "
                      f"saved in {last_checkpoint} and {pipeline_dir}.", file=sys.stderr)
            return None

    samples_image = extra("the final sample grid", lambda: write_samples(state.step))
    extra("the final evaluation", lambda: run_evaluation(state.step, final=True))
    if accelerator.is_main_process:
        evaluation = metric_evaluation.latest if metric_evaluation else None
        extra("adding the sample grid and metrics to the model card", lambda: complete_model_card(
            pipeline, pipeline_dir, run, state, samples_image, evaluation, remote_code=args.push_to_hub))
        if args.push_to_hub:
            extra("uploading the pipeline", lambda: upload_pipeline(
                pipeline_dir, state, repo_id=args.hub_model_id, token=args.hub_token, private=args.hub_private_repo))
    accelerator.wait_for_everyone()
    if accelerator.num_processes > 1:
        # gloo's worker threads free their last finished work (whose tensors Python owns) once they get the GIL. The
        # process group's destructor joins those threads and runs, GIL held, when the DDP wrappers are freed as `main`
        # returns: a worker still waiting for the GIL then deadlocks the rank (py-spy: ~ProcessGroupGloo in
        # thread::join, the worker in ~AsyncBarrierWork acquiring the GIL; 1 run in ~20). Sleeping hands them the GIL.
        time.sleep(0.25)
    accelerator.end_training()  # destroys the process group
    kimg = state.kimg(args.train_batch_size)
    if accelerator.is_main_process:
        minutes = state.train_seconds / 60
        print(f"Trained {state.step} steps ({kimg:.1f} kimg) in {minutes:.1f} min of training.")
        if samples_image is not None:
            print(f"Sample grid (EMA generator): {samples_image}")
        print(f"Pipeline: {pipeline_dir}  ->  TransGANPipeline.from_pretrained({str(pipeline_dir)!r})")
    return TrainingResult(output_dir, pipeline_dir, samples_image, state.step, kimg)


def cli_main(script: str | os.PathLike | None = None) -> int:
    """Run `main` on `sys.argv`; a user's mistake is one `error:` line and exit code 2 (3: the training diverged).

    With several processes every one meets the same error, and only the main process prints it: the others wait,
    and the launcher stops them once the main process has exited. One that is still running after
    `OTHER_RANK_GRACE_SECONDS` (its error was its own) prints it too, with its rank.
    """
    try:
        main(script=script)
    except (CommandError, CorruptImageError, NonFiniteError) as error:  # CorruptImageError: met while training
        rank = int(os.environ.get("RANK", "0"))
        if rank:
            time.sleep(OTHER_RANK_GRACE_SECONDS)
        print(f"error: {f'process {rank}: ' if rank else ''}{' '.join(str(error).split())}", file=sys.stderr)
        return 3 if isinstance(error, NonFiniteError) else 2
    except KeyboardInterrupt:  # a checkpoint being written stays unfinished (`.tmp`) and is removed at the next start
        print("interrupted", file=sys.stderr)
        return 130
    return 0
