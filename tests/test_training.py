"""training/train.py: presets and flags, short end-to-end runs, exact resume, SIGKILL during a checkpoint, two CPU
processes, divergence and input errors. Every run uses a micro model and 16 synthetic images (seconds each)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT, SUBPROCESS_ENV, TRAIN_SCRIPT, StandInFeatures, assert_same_weights, model_weights
from PIL import Image

from transgan_hf import TransGANDiscriminatorConfig, TransGANGeneratorConfig, TransGANPipeline
from transgan_hf.cli import CommandError
from transgan_hf.training import loop, trainer
from transgan_hf.training.args import load_model_configs, parse_args, training_recipe
from transgan_hf.training.checkpointing import ARGS_FILE, KILL_ENV, check_resume_settings, list_checkpoints
from transgan_hf.training.export import describe_loss
from transgan_hf.training.presets import TRAINING_PRESETS, get_training_recipe
from transgan_hf.training.reporting import TrainingLog
from transgan_hf.training.trainer import GANTrainer, NonFiniteError, build_models, build_optimizers

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def reference_run(single_thread, micro_args, run_training_in_process, tmp_path_factory) -> Path:
    """6 uninterrupted steps; checkpoints at 3 and 6."""
    output = tmp_path_factory.mktemp("reference")
    run_training_in_process(micro_args(output, "--max_train_steps", "6"))
    return output


# ---------------------------------------------------------------------------------------------------------------------
# Presets and flags
# ---------------------------------------------------------------------------------------------------------------------


def test_presets_carry_the_official_recipes():
    cifar, stl = TRAINING_PRESETS["cifar10"], TRAINING_PRESETS["stl10"]
    celeba, church = TRAINING_PRESETS["celeba_hq_256"], TRAINING_PRESETS["church_256"]
    assert (cifar.train_batch_size, cifar.gen_batch_size, cifar.n_critic, cifar.ema_warmup) == (64, 128, 4, 0.1)
    assert (stl.train_batch_size, stl.gen_batch_size, stl.n_critic, stl.ema_warmup) == (32, 64, 5, 0.05)
    assert stl.diffaug_policy == "translation,stl_erase_ratio,color"
    assert (celeba.gradient_accumulation_steps, celeba.gen_gradient_accumulation_steps) == (4, 4)
    assert celeba.ema_decay == 0.995
    assert (church.train_batch_size, church.gen_gradient_accumulation_steps, church.ema_decay) == (16, 8, 0.995)
    assert celeba.diffaug_policy == "filter,translation,erase_ratio,color,hue"
    for recipe in (cifar, stl, celeba, church):
        assert (recipe.loss, recipe.phi, recipe.learning_rate) == ("wgangp-eps", 1.0, 1e-4)
        assert (recipe.adam_beta1, recipe.adam_beta2, recipe.max_grad_norm) == (0.0, 0.99, 5.0)
    # 500 k loader iterations * n_critic ... = 500 k G updates at 32-48 px, 125 k with the 256-px accumulation of 4
    assert (cifar.max_train_steps, stl.max_train_steps, celeba.max_train_steps) == (500_000, 500_000, 125_000)


def test_preset_alone_gives_its_recipe_and_flags_override_it():
    args = parse_args(["--preset", "stl10", "--train_data_dir", "x"])
    assert (args.train_batch_size, args.gen_batch_size, args.n_critic, args.ema_kimg, args.ema_warmup) == (32, 64, 5,
                                                                                                           500.0, 0.05)
    assert args.diffaug_policy == "translation,stl_erase_ratio,color" and args.random_flip and args.center_crop
    args = parse_args(["--preset", "stl10", "--n_critic", "2", "--loss", "hinge", "--no-random_flip"])
    assert (args.n_critic, args.loss, args.random_flip) == (2, "hinge", False)
    # a half-life given for a fixed-decay preset replaces the decay; an explicit decay wins over a half-life
    assert parse_args(["--preset", "church_256", "--ema_kimg", "100"]).ema_decay is None
    assert parse_args(["--preset", "cifar10", "--ema_decay", "0.999"]).ema_decay == 0.999
    # kimg -> generator updates: 64 images * 4 critic iterations = 256 images per step
    assert parse_args(["--preset", "cifar10", "--max_train_kimg", "1"]).max_train_steps == 4
    with pytest.raises(CommandError, match="argument --max_train_kimg: not allowed with argument --max_train_steps"):
        parse_args(["--max_train_steps", "3", "--max_train_kimg", "1"])
    with pytest.raises(CommandError, match="argument --n_critic: must be >= 1, got 0"):
        parse_args(["--n_critic", "0"])
    assert parse_args([]).dataset_name == "mnist-5k"  # the embedded default
    assert parse_args(["--preset", "cifar10", "--train_data_dir", "x"]).dataset_name is None


def test_the_training_readme_recipe_table_matches_the_presets():
    """The flag/preset table of training/README.md is written by hand; its countable rows must equal the recipes."""
    rows = {}
    for line in (ROOT / "training" / "README.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`--"):
            rows[cells[0]] = cells[1:]
    presets = [TRAINING_PRESETS[name] for name in ("cifar10", "stl10", "celeba_hq_256", "church_256", "tiny")]

    def numbers(cell: str) -> list[int]:
        return [int(n.replace(",", "")) for n in re.findall(r"\d[\d,]*", cell)]

    assert [numbers(c) for c in rows["`--max_train_steps` (G updates)"]] == [[p.max_train_steps] for p in presets]
    assert [numbers(c) for c in rows["`--n_critic`"]] == [[p.n_critic] for p in presets]
    assert [numbers(c) for c in rows["`--train_batch_size` (D, global)"]] == [[p.train_batch_size] for p in presets]
    assert [numbers(c) for c in rows["`--gen_batch_size` (G, global)"]] == [[p.gen_batch_size] for p in presets]
    assert [c.startswith("on") for c in rows["`--fused_adam`"]] == [p.fused_adam for p in presets]


def test_fused_adam_is_on_in_every_preset_and_the_flag_turns_it_off():
    """`--no-fused_adam` gives PyTorch's per-tensor Adam (the previous demo model was trained with it)."""
    tiny, cifar = parse_args([]), parse_args(["--preset", "cifar10"])
    assert (tiny.fused_adam, cifar.fused_adam) == (True, True)
    per_tensor = parse_args(["--no-fused_adam"])
    assert not per_tensor.fused_adam and parse_args(["--preset", "cifar10", "--fused_adam"]).fused_adam
    networks = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    assert all(opt.defaults["fused"] for opt in build_optimizers(*networks, training_recipe(tiny)))
    assert not any(opt.defaults["fused"] for opt in build_optimizers(*networks, training_recipe(per_tensor)))


def test_cpu_memory_reuse_is_on_by_default_for_cpu_runs_only(monkeypatch):
    calls = []
    monkeypatch.setattr(loop, "reuse_freed_cpu_memory", lambda: calls.append(1) or True)
    on, off = parse_args([]), parse_args(["--no-cpu_memory_reuse"])
    assert (on.cpu_memory_reuse, off.cpu_memory_reuse) == (True, False)
    loop.configure_cpu_memory(off.cpu_memory_reuse, torch.device("cpu"))
    loop.configure_cpu_memory(on.cpu_memory_reuse, torch.device("cuda"))
    assert not calls
    loop.configure_cpu_memory(on.cpu_memory_reuse, torch.device("cpu"))
    assert calls == [1]


def test_import_transgan_hf_leaves_the_training_package_out():
    """Training's dependencies are an extra: sampling must not need them."""
    code = "import sys, transgan_hf; print(sorted(m for m in sys.modules if m.startswith('transgan_hf.training')))"
    result = subprocess.run([sys.executable, "-c", code], env=SUBPROCESS_ENV, capture_output=True, text=True,
                            timeout=300)
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr[-2000:]


def test_the_trainer_runs_without_the_command_line(training_workspace):
    """The parts take typed values (a recipe, keyword arguments), not parsed flags."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    recipe = get_training_recipe("tiny").replace(train_batch_size=4, gen_batch_size=4)
    configs = (TransGANGeneratorConfig.from_json_file(training_workspace / "generator.json"),
               TransGANDiscriminatorConfig.from_json_file(training_workspace / "discriminator.json"))
    try:
        accelerator = Accelerator(cpu=True)
        generator, discriminator, ema = build_models(*configs, accelerator.device, seed=0, loss=recipe.loss)
        before = [parameter.clone() for parameter in ema.model.parameters()]
        trainer = GANTrainer(accelerator, generator, discriminator, *build_optimizers(generator, discriminator, recipe),
                             ema, recipe, seed=0)
        trainer.discriminator_iteration(torch.rand(4, 3, 16, 16) * 2 - 1, step=1, update=True)
        trainer.generator_update(step=1)
        beta = trainer.update_ema(cur_nimg=0)
        logs = trainer.pop_means()
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    assert beta == 0.0  # the warm-up starts the average as a copy of the generator
    assert set(logs) == set(GANTrainer.LOGGED) - {"loss/r1_penalty", "loss/r2_penalty"}  # R1/R2: not in this recipe
    assert all(np.isfinite(value) for value in logs.values())
    assert not all(torch.equal(a, b) for a, b in zip(before, ema.model.parameters()))  # the updated generator


def test_resolution_the_preset_cannot_produce_is_refused():
    args = parse_args(["--resolution", "48"])
    with pytest.raises(CommandError, match=r"--resolution 48 cannot be produced by the 'tiny' preset.*32x32"):
        load_model_configs(args)


# ---------------------------------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------------------------------


class CountingHook:
    every_steps = 2

    def __init__(self) -> None:
        self.steps = []

    def __call__(self, context):
        self.steps.append(context.step)
        images = context.pipeline(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
        return {"mean_pixel": float(images.mean())}


def test_short_run_writes_samples_logs_checkpoints_and_a_pipeline(micro_args, run_training_in_process, tmp_path):
    output = tmp_path / "run"
    hook = CountingHook()
    result = run_training_in_process(
        micro_args(output, "--max_train_steps", "5", "--save_images_steps", "2", "--checkpointing_steps", "1",
                   "--checkpoints_total_limit", "2", "--report_to", "tensorboard", "--seed", "7"),
        evaluation_hooks=[hook],
    )
    assert (result.step, result.pipeline_dir) == (5, output / "pipeline")
    assert hook.steps == [2, 4, 5]
    assert sorted(p.name for p in (output / "samples").iterdir()) == ["step_000002.png", "step_000004.png",
                                                                      "step_000005.png"]
    assert Image.open(result.samples_image).size == (32, 32)  # 2x2 grid of 16-px samples
    assert [p.name for _, p in list_checkpoints(output)] == ["checkpoint-4", "checkpoint-5"]
    checkpoint = output / "checkpoint-5"
    for entry in ("generator", "generator_ema", "discriminator", "optimizer.bin", "training_state_0.pt"):
        assert (checkpoint / entry).exists(), entry

    pipeline_dir = result.pipeline_dir
    for entry in ("model_index.json", "generator", "discriminator", "samples.png", "README.md"):
        assert (pipeline_dir / entry).exists(), entry
    assert_same_weights(pipeline_dir / "generator", checkpoint / "generator_ema")  # the pipeline holds the EMA
    card = (pipeline_dir / "README.md").read_text()
    assert re.search(r"accelerate launch \S*training/train.py --generator_config", card)
    assert "| seed | 7 |" in card and "| steps (generator updates) | 5 |" in card and "samples.png" in card
    pipe = TransGANPipeline.from_pretrained(pipeline_dir)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((output / "logs").rglob("events.out.tfevents*")).parent)).Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"loss/discriminator", "loss/generator", "loss/gradient_penalty", "progress/kimg", "speed/sec_per_kimg",
            "ema/beta", "eval/mean_pixel"} <= scalars
    assert "samples" in events.Tags()["images"]
    kimg = [event.value for event in events.Scalars("progress/kimg")]
    assert kimg[-1] == pytest.approx(5 * 2 * 2 * 4 / 1000)  # steps * n_critic * accumulation * batch


@pytest.mark.parametrize("extra", [(), ("--official_d_grad_leak", "--n_critic", "1", "--gradient_accumulation_steps",
                                        "1", "--gen_gradient_accumulation_steps", "2")],
                         ids=["default", "official-leak"])
def test_resume_gives_the_weights_of_an_uninterrupted_run(micro_args, run_training_in_process, tmp_path, reference_run,
                                                          extra):
    if extra:  # the leak leaves D gradients pending across a checkpoint when n_critic * accumulation is 1
        reference = tmp_path / "reference"
        run_training_in_process(micro_args(reference, "--max_train_steps", "6", *extra))
    else:
        reference = reference_run
    resumed = tmp_path / "resumed"
    run_training_in_process(micro_args(resumed, "--max_train_steps", "3", *extra))
    run_training_in_process(micro_args(resumed, "--max_train_steps", "6", "--resume_from_checkpoint", "latest",
                                       *extra))
    for folder in ("generator", "generator_ema", "discriminator"):
        assert_same_weights(reference / "checkpoint-6" / folder, resumed / "checkpoint-6" / folder)
    state = torch.load(resumed / "checkpoint-6" / "training_state_0.pt", weights_only=True)
    assert (state["step"], len(state["commands"])) == (6, 2)  # both launches recorded for the model card


def test_a_resumed_segment_trains_at_its_own_learning_rate_and_augmentation_and_the_card_says_so(
    micro_args, run_training_in_process, tmp_path
):
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "3", "--learning_rate", "1e-3"))
    result = run_training_in_process(micro_args(output, "--max_train_steps", "6", "--learning_rate", "2e-4",
                                                "--diffaug_policy", "none", "--ema_kimg", "10",
                                                "--resume_from_checkpoint", "latest"))
    for name in ("optimizer.bin", "optimizer_1.bin"):  # not the rate the checkpoint's optimiser state was saved with
        saved = torch.load(output / "checkpoint-6" / name, weights_only=True)
        assert [group["lr"] for group in saved["param_groups"]] == [2e-4]
    state = torch.load(output / "checkpoint-6" / "training_state_0.pt", weights_only=True)
    history = state["settings_history"]
    assert history["learning_rate"] == [[0, 1e-3], [3, 2e-4]]
    assert history["diffaug_policy"] == [[0, "translation"], [3, "none"]]  # micro_args ask for translation
    assert history["ema_kimg"] == [[0, 3.0], [3, 10.0]]
    card = (result.pipeline_dir / "README.md").read_text()
    assert "Adam lr 0.001 (0.0002 from step 3) betas" in card
    assert "| DiffAugment | translation (none from step 3) |" in card
    assert "| EMA | half-life 3.0 (10.0 from step 3) kimg, warm-up" in card


def test_sigkill_while_writing_a_checkpoint_resumes_from_the_previous_one(micro_args, tmp_path, reference_run):
    output = tmp_path / "killed"
    command = [sys.executable, str(TRAIN_SCRIPT), *micro_args(output, "--max_train_steps", "6")]
    killed = subprocess.run(command, env={**SUBPROCESS_ENV, KILL_ENV: "6"}, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = output / "checkpoint-6.tmp"
    assert (partial / "generator").is_dir() and not (partial / "optimizer.bin").exists()  # killed mid-write
    assert [p.name for _, p in list_checkpoints(output)] == ["checkpoint-3"]  # `latest` ignores the .tmp

    resumed = subprocess.run(command + ["--resume_from_checkpoint", "latest"], env=SUBPROCESS_ENV,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert re.search(r"Resumed from .*checkpoint-3 at step 3", resumed.stderr)
    assert not partial.exists()
    for folder in ("generator", "generator_ema", "discriminator"):
        assert_same_weights(reference_run / "checkpoint-6" / folder, output / "checkpoint-6" / folder)


TWO_PROCESS_WRAPPER = """
import faulthandler, hashlib, json, sys
import torch

faulthandler.dump_traceback_later(180, exit=True)  # a stuck rank prints where it waits and exits (normally ~20 s)
from transgan_hf.training.loop import main


def digest(model):
    flat = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
    return hashlib.sha256(flat.numpy().tobytes()).hexdigest()


class WeightDigest:
    every_steps = 2

    def __call__(self, context):
        rank = context.accelerator.process_index
        digests = {{"world": context.accelerator.num_processes, "generator": digest(context.generator),
                    "discriminator": digest(context.discriminator), "ema": digest(context.pipeline.generator)}}
        with open({output!r} + f"/digest_rank{{rank}}_step{{context.step}}.json", "w") as handle:
            json.dump(digests, handle)
        return {{}}


sys.path.insert(0, {tests_dir!r})
from helpers import StandInFeatures
from transgan_hf.metrics import register_feature_extractor

register_feature_extractor("standin", lambda weights_path=None: StandInFeatures())
main(sys.argv[1:], evaluation_hooks=[WeightDigest()])
"""


def test_two_cpu_processes_train_in_step(training_workspace, micro_args, tmp_path):
    output = tmp_path / "ddp"
    output.mkdir()
    wrapper = tmp_path / "launch_two.py"
    wrapper.write_text(TWO_PROCESS_WRAPPER.format(output=str(output), tests_dir=str(ROOT / "tests")))
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(wrapper),
               *micro_args(output, "--max_train_steps", "4", "--checkpointing_steps", "2", *EVAL_FLAGS)]
    finished = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=420)
    assert finished.returncode == 0, finished.stderr[-8000:]  # a stuck rank's stacks (faulthandler) included
    for step in (2, 4):
        digests = [json.loads((output / f"digest_rank{rank}_step{step}.json").read_text()) for rank in (0, 1)]
        assert digests[0]["world"] == 2
        assert digests[0] == digests[1], f"ranks disagree at step {step}"
    assert (output / "pipeline" / "generator" / "model.safetensors").is_file()
    for rank in (0, 1):  # every process saved its own random states
        assert (output / "checkpoint-4" / f"training_state_{rank}.pt").is_file()
    # --eval_steps: both ranks generated their share; rank 0 logged the value one process computes alone.
    evaluations = [row for row in read_log(output) if "eval/fid" in row]
    assert [row["step"] for row in evaluations] == [2, 4]
    independent = evaluate_saved_pipeline(output / "pipeline", training_workspace / "images", num_images=10, seed=0)
    assert evaluations[-1]["eval/fid"] == pytest.approx(independent["fid"], rel=1e-5)


def test_two_cpu_processes_stop_together_on_the_time_budget(micro_args, tmp_path):
    """The main process decides when --max_train_minutes is reached; every rank stops after the same step."""
    output = tmp_path / "ddp_minutes"
    command = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", str(TRAIN_SCRIPT),
               *micro_args(output, "--max_train_steps", "100000", "--max_train_minutes", "0.003",
                           "--checkpointing_steps", "100000")]
    finished = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=420)
    assert finished.returncode == 0, finished.stderr[-8000:]
    checkpoints = [path.name for path in output.glob("checkpoint-*")]
    assert len(checkpoints) == 1 and checkpoints[0] != "checkpoint-100000", checkpoints
    for rank in (0, 1):  # both ranks saved their state at the same final step
        assert (output / checkpoints[0] / f"training_state_{rank}.pt").is_file()
    assert (output / "pipeline" / "generator" / "model.safetensors").is_file()
    assert read_log(output)[-1]["progress/train_seconds"] >= 0.003 * 60


def test_push_to_hub_uploads_the_pipeline_folder(micro_args, run_training_in_process, tmp_path, monkeypatch, capsys):
    from huggingface_hub import HfApi

    from transgan_hf.remote_code import remote_code_entries

    calls, network = [], {"up": True}

    class Created:
        repo_id = "someone/tiny-digits"

    def create_repo(self, repo_id, private=None, exist_ok=False):
        calls.append(("create", repo_id, private))
        return Created()

    def upload_folder(self, repo_id, folder_path, commit_message=None, create_pr=False, ignore_patterns=None):
        calls.append(("upload", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
        if not network["up"]:
            raise OSError("no network")
        return "https://huggingface.co/someone/tiny-digits/commit/1"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    output = tmp_path / "push"
    flags = ("--max_train_steps", "1", "--push_to_hub", "--hub_model_id", "someone/tiny-digits")
    run_training_in_process(micro_args(output, *flags))
    assert calls[0] == ("create", "someone/tiny-digits", False)
    assert calls[1][:2] == ("upload", "someone/tiny-digits") and "model_index.json" in calls[1][2]
    assert "samples.png" in calls[1][2] and "checkpoint-1" not in calls[1][2]  # only the pipeline folder
    assert set(remote_code_entries()) <= set(calls[1][2])  # published with its code: loads with diffusers alone
    assert "someone/tiny-digits" in (output / "pipeline" / "README.md").read_text()
    assert "Pushed to https://huggingface.co/someone/tiny-digits" in capsys.readouterr().out
    network["up"] = False
    run_training_in_process(micro_args(tmp_path / "offline", *flags))  # a failed upload keeps the local pipeline
    assert "uploading it to someone/tiny-digits failed: no network" in capsys.readouterr().err
    assert (tmp_path / "offline" / "pipeline" / "model_index.json").is_file()


def test_bf16_autocast_with_gradient_checkpointing_trains(micro_args, run_training_in_process, tmp_path):
    """Checkpointed blocks are recomputed in backward, also through the gradient penalty's double backward."""
    output = tmp_path / "bf16"
    run_training_in_process(micro_args(output, "--max_train_steps", "2", "--mixed_precision", "bf16",
                                       "--gradient_checkpointing", "--checkpointing_steps", "2"))
    for folder in ("generator", "discriminator"):
        assert all(torch.isfinite(t).all() for t in model_weights(output / "checkpoint-2" / folder).values())
    assert (output / "pipeline" / "model_index.json").is_file()


def test_lazy_gradient_penalty_runs_every_nth_update_with_n_times_the_weight(micro_args, run_training_in_process,
                                                                             tmp_path, monkeypatch):
    """--gp_interval 3: the penalty on D updates 0 and 3 only (both micro-batches of each), weighted x3, so that its
    average strength is the official one. The D loss is zeroed and the penalty fixed to 1 to read the weight off the
    logged loss."""
    calls = []

    def constant_penalty(critic, real, fake, phi=1.0, generator=None):
        calls.append(len(calls))
        return torch.ones(())

    monkeypatch.setattr(trainer, "gradient_penalty", constant_penalty)
    monkeypatch.setattr(trainer, "discriminator_loss", lambda real, fake, loss: 0 * (real.sum() + fake.sum()))
    output = tmp_path / "lazy"
    run_training_in_process(micro_args(output, "--max_train_steps", "3", "--gp_interval", "3"))
    assert len(calls) == 4  # 6 D updates x 2 micro-batches, penalised: updates 0 and 3
    rows = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    losses = [row["loss/discriminator"] for row in rows if "loss/discriminator" in row]
    assert losses == pytest.approx([15.0, 15.0, 0.0])  # per step: 2 of 4 iterations carry 10 x 3 x 1, then none
    assert sum(losses) / len(losses) == pytest.approx(10.0)  # = weight 10 x penalty 1 on every iteration (official)
    penalties = [row.get("loss/gradient_penalty") for row in rows if "loss/discriminator" in row]
    assert penalties == [1.0, 1.0, None]  # the unweighted penalty, left out of step 3's row (not computed there)
    assert "gradient penalty phi 1.0 (every 3 D updates, x 3)" in (output / "pipeline" / "README.md").read_text()
    with pytest.raises(CommandError, match="argument --gp_interval: must be >= 1"):
        parse_args(micro_args(tmp_path / "a", "--gp_interval", "0"))
    with pytest.raises(CommandError, match="--loss hinge does not have here"):
        parse_args(micro_args(tmp_path / "b", "--gp_interval", "2", "--loss", "hinge"))


def test_gp_batch_shrink_takes_the_penalty_on_a_fraction_of_the_interpolates(micro_args, run_training_in_process,
                                                                              tmp_path, monkeypatch):
    """--gp_batch_shrink 2: the WGAN-GP penalty sees half of each batch of 4 (real and fake paired alike); the card
    says so; values that leave no interpolate, or a loss without WGAN-GP, are refused."""
    sizes = []
    original = trainer.gradient_penalty

    def recording_penalty(critic, real, fake, phi=1.0, generator=None):
        sizes.append((real.shape[0], fake.shape[0]))
        return original(critic, real, fake, phi=phi, generator=generator)

    monkeypatch.setattr(trainer, "gradient_penalty", recording_penalty)
    output = tmp_path / "shrink"
    run_training_in_process(micro_args(output, "--max_train_steps", "1", "--gp_batch_shrink", "2"))
    assert sizes == [(2, 2)] * 4  # 2 D updates x 2 micro-batches of 4 images, each penalised on 2
    assert "gradient penalty phi 1.0 on 1/2 of the batch" in (output / "pipeline" / "README.md").read_text()
    with pytest.raises(CommandError, match="--gp_batch_shrink 8 leaves no interpolate of the 4 "):
        run_training_in_process(micro_args(tmp_path / "a", "--max_train_steps", "1", "--gp_batch_shrink", "8"))
    with pytest.raises(CommandError, match="argument --gp_batch_shrink: shrinks the WGAN-GP interpolates"):
        parse_args(micro_args(tmp_path / "b", "--gp_batch_shrink", "2", "--loss", "hinge"))


def test_a_presets_lazy_penalty_settings_do_not_block_a_loss_without_that_penalty(tmp_path):
    """`tiny` takes the WGAN-GP penalty every 2nd update on half the interpolates; `--loss hinge` (no penalty) or
    `--loss nonsaturating --r1_gamma 1` on it runs (R1 lazily, the shrink unused) — only the flags given are refused."""
    hinge = parse_args(["--loss", "hinge", "--output_dir", str(tmp_path / "a")])
    assert (hinge.gp_interval, hinge.gp_batch_shrink) == (2, 2)
    assert "gradient penalty" not in describe_loss(training_recipe(hinge))
    r1 = parse_args(["--loss", "nonsaturating", "--r1_gamma", "1", "--output_dir", str(tmp_path / "b")])
    assert describe_loss(training_recipe(r1)) == "nonsaturating, R1 gamma 1 (every 2 D updates, x 2)"
    with pytest.raises(CommandError, match="argument --gp_batch_shrink: shrinks the WGAN-GP interpolates"):
        parse_args(["--loss", "hinge", "--gp_batch_shrink", "2", "--output_dir", str(tmp_path / "c")])


def test_r1_and_r2_penalties_are_lazy_and_weighted_by_half_gamma_times_the_interval(
        micro_args, run_training_in_process, tmp_path, monkeypatch):
    """--r1_gamma 4 --r2_gamma 2 --gp_interval 3: both penalties on D updates 0 and 3 only, R1 at the real images
    and R2 at the generated ones, each weighted gamma/2 x 3 (the D loss is zeroed and the penalty fixed to 1 to read
    the weights off the logged loss); the card names them."""
    calls = []

    def constant_penalty(logits, images):
        calls.append(images.requires_grad)
        return torch.ones(())

    monkeypatch.setattr(trainer, "input_gradient_penalty", constant_penalty)
    monkeypatch.setattr(trainer, "discriminator_loss", lambda real, fake, loss: 0 * (real.sum() + fake.sum()))
    output = tmp_path / "r1r2"
    run_training_in_process(micro_args(output, "--max_train_steps", "3", "--loss", "nonsaturating", "--r1_gamma",
                                       "4", "--r2_gamma", "2", "--gp_interval", "3"))
    assert calls == [True] * 8  # 2 penalised updates x 2 micro-batches x (R1, R2)
    rows = [json.loads(line) for line in (output / "training_log.jsonl").read_text().splitlines()]
    losses = [row["loss/discriminator"] for row in rows if "loss/discriminator" in row]
    assert losses == pytest.approx([4.5, 4.5, 0.0])  # per step: 2 of 4 iterations carry (4/2 + 2/2) x 3, then none
    assert sum(losses) / len(losses) == pytest.approx(3.0)  # = 4/2 + 2/2 on every iteration
    assert [row.get("loss/r1_penalty") for row in rows if "loss/discriminator" in row] == [1.0, 1.0, None]
    assert "loss/gradient_penalty" not in rows[0]
    assert "nonsaturating, R1 gamma 4, R2 gamma 2 (every 3 D updates, x 3)" in (
        output / "pipeline" / "README.md").read_text()
    with pytest.raises(CommandError, match="argument --r1_gamma: --loss wgangp-eps has its own gradient penalty"):
        parse_args(micro_args(tmp_path / "c", "--r1_gamma", "1"))
    with pytest.raises(CommandError, match="argument --r2_gamma: must be >= 0"):
        parse_args(micro_args(tmp_path / "d", "--r2_gamma", "-1", "--loss", "hinge"))


class SleepingHook:
    """An evaluation that takes `seconds` of wall-clock at every second step (and at the end)."""

    every_steps = 2

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, context):
        time.sleep(self.seconds)
        return {"slept": self.seconds}


def test_train_seconds_are_logged_in_every_row_without_evaluation_time(micro_args, run_training_in_process, tmp_path,
                                                                       reference_run):
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "4"), evaluation_hooks=[SleepingHook(1.0)])
    rows = read_log(output)
    assert [(row["step"], "eval/slept" in row) for row in rows] == [(1, False), (2, False), (2, True), (3, False),
                                                                     (4, False), (4, True)]
    seconds = [row["progress/train_seconds"] for row in rows]
    assert seconds == sorted(seconds) and seconds[0] > 0
    by_step = {}
    for row in rows:  # an evaluation row has the training time at the step it evaluated
        assert by_step.setdefault(row["step"], row["progress/train_seconds"]) == row["progress/train_seconds"]
    state = torch.load(output / "checkpoint-4" / "training_state_0.pt", weights_only=True)
    assert state["overhead_seconds"] >= 1.0  # the evaluation at step 2 (and checkpoint-3)
    assert seconds[-1] == pytest.approx(state["train_seconds"] - state["overhead_seconds"])

    # A checkpoint written before `overhead_seconds` existed still resumes, exactly.
    older = tmp_path / "older"
    run_training_in_process(micro_args(older, "--max_train_steps", "3"))
    state_file = older / "checkpoint-3" / "training_state_0.pt"
    saved = torch.load(state_file, weights_only=True)
    del saved["overhead_seconds"]
    torch.save(saved, state_file)
    run_training_in_process(micro_args(older, "--max_train_steps", "6", "--resume_from_checkpoint", "latest"))
    for folder in ("generator", "generator_ema", "discriminator"):
        assert_same_weights(reference_run / "checkpoint-6" / folder, older / "checkpoint-6" / folder)


def test_max_train_minutes_stops_after_the_step_that_reaches_it(micro_args, run_training_in_process, tmp_path):
    output = tmp_path / "run"
    flags = micro_args(output, "--max_train_steps", "1000", "--max_train_minutes", "0.001")  # 60 ms
    result = run_training_in_process(flags)
    seconds = [row["progress/train_seconds"] for row in read_log(output)]
    assert len(seconds) == result.step < 1000
    assert seconds[-1] >= 0.06 and all(value < 0.06 for value in seconds[:-1])
    assert list_checkpoints(output)[-1] == (result.step, output / f"checkpoint-{result.step}")
    assert_same_weights(result.pipeline_dir / "generator", output / f"checkpoint-{result.step}" / "generator_ema")
    assert result.samples_image == output / "samples" / f"step_{result.step:06d}.png"
    # Resuming the finished run with the same limit trains no further.
    resumed = run_training_in_process([*flags, "--resume_from_checkpoint", "latest"])
    assert resumed.step == result.step


def test_bad_max_train_minutes_is_one_error_line(micro_args, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["train.py", *micro_args(tmp_path / "run", "--max_train_minutes", "0")])
    assert loop.cli_main() == 2
    assert capsys.readouterr().err == "error: argument --max_train_minutes: must be > 0, got 0\n"
    assert not (tmp_path / "run").exists()


def test_divergence_stops_with_the_step_and_network_and_keeps_the_last_good_checkpoint(micro_args,
                                                                                       run_training_in_process,
                                                                                       tmp_path):
    output = tmp_path / "diverge"
    run_training_in_process(micro_args(output, "--max_train_steps", "2", "--checkpointing_steps", "2"))
    # phi 1e-30 makes the penalty weight 10/phi^2 overflow float32: the discriminator loss is infinite
    with pytest.raises(NonFiniteError, match=r"discriminator loss became NaN/infinite at step 3\. The last "
                                             r"good checkpoint is .*checkpoint-2"):
        run_training_in_process(micro_args(output, "--max_train_steps", "4", "--checkpointing_steps", "1",
                                           "--phi", "1e-30", "--resume_from_checkpoint", "latest"))
    assert [p.name for _, p in list_checkpoints(output)] == ["checkpoint-2"]
    assert_same_weights(output / "pipeline" / "generator", output / "checkpoint-2" / "generator_ema")  # not replaced


# ---------------------------------------------------------------------------------------------------------------------
# --eval_steps: metrics of the EMA generator during training
# ---------------------------------------------------------------------------------------------------------------------

EVAL_FLAGS = ("--eval_steps", "2", "--eval_num_images", "10", "--eval_batch_size", "4",
              "--eval_feature_extractor", "standin", "--eval_metrics", "fid,is")


def standin_features(weights_path=None):
    return StandInFeatures()


def evaluate_saved_pipeline(pipeline_dir: Path, image_folder: Path, num_images: int, seed: int) -> dict:
    """The same evaluation outside training: the saved EMA pipeline against statistics of the training images."""
    from transgan_hf.data import load_image_dataset
    from transgan_hf.metrics import compute_reference_statistics, evaluate_generator, reference_batches

    extractor = standin_features()
    dataset = load_image_dataset(None, str(image_folder))
    reference = compute_reference_statistics(reference_batches(dataset, "image", len(dataset), 4, 16), extractor)
    pipe = TransGANPipeline.from_pretrained(pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    result = evaluate_generator(
        lambda generators: pipe(batch_size=len(generators), generator=generators, output_type="pt").images,
        num_images, extractor, reference, batch_size=3, seed=seed, metrics=("fid", "is"), progress=False,
    )
    return result["metrics"]


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / TrainingLog.FILE).read_text().splitlines()]


def test_eval_steps_logs_metrics_of_the_ema_generator_and_writes_them_into_the_card(training_workspace, micro_args,
                                                                                      run_training_in_process,
                                                                                      tmp_path):
    from transgan_hf.metrics import register_feature_extractor

    register_feature_extractor("standin", standin_features)
    output = tmp_path / "run"
    run_training_in_process(micro_args(output, "--max_train_steps", "5", "--seed", "3", *EVAL_FLAGS))
    rows = read_log(output)
    evaluations = [row for row in rows if "eval/fid" in row]
    assert [row["step"] for row in evaluations] == [2, 4, 5]
    assert [row["step"] for row in rows if "loss/generator" in row] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(row["eval/fid"]) and row["eval/fid"] > 0 for row in evaluations)
    assert len({row["eval/fid"] for row in evaluations}) == 3  # the generator changes, the evaluation seed does not

    # The logged value is the one an independent evaluation of the exported EMA pipeline gives (seed = --seed).
    independent = evaluate_saved_pipeline(output / "pipeline", training_workspace / "images", num_images=10, seed=3)
    assert evaluations[-1]["eval/fid"] == pytest.approx(independent["fid"], rel=1e-5)
    assert evaluations[-1]["eval/is"] == pytest.approx(independent["is"], rel=1e-5)
    from huggingface_hub import ModelCard

    card = ModelCard.load(output / "pipeline" / "README.md")
    values = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert values == pytest.approx({"fid": evaluations[-1]["eval/fid"], "is": evaluations[-1]["eval/is"]})
    assert "test stand-in network" in card.text

    # Resuming drops the log rows the interrupted run wrote after the checkpoint (step 3).
    run_training_in_process(micro_args(output, "--max_train_steps", "5", "--seed", "3",
                                       "--resume_from_checkpoint", str(output / "checkpoint-3"), *EVAL_FLAGS))
    resumed = read_log(output)
    assert [row["step"] for row in resumed if "loss/generator" in row] == [1, 2, 3, 4, 5]
    assert [row["eval/fid"] for row in resumed if "eval/fid" in row] == pytest.approx(
        [row["eval/fid"] for row in evaluations], rel=1e-6)


def test_eval_flag_errors_stop_before_training(micro_args, run_training_in_process, tmp_path, monkeypatch):
    monkeypatch.delenv("TRANSGAN_INCEPTION_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cases = [
        (("--eval_steps", "2", "--eval_reference", str(tmp_path / "missing.npz")), "is not a file"),
        (("--eval_steps", "2", "--eval_metrics", "fid,sharpness"), "unknown \\['sharpness'\\]"),
        (("--eval_steps", "2", "--eval_num_images", "1"), "must be >= 2"),
        (("--eval_steps", "2", "--eval_metrics", "kid", "--eval_num_images", "500"), "subsets of 1000"),
        (("--eval_steps", "2"), "pt_inception-2015-12-05"),  # default Inception network: weights missing
    ]
    for extra, message in cases:
        output = tmp_path / "run"
        with pytest.raises(CommandError, match=message):
            run_training_in_process(micro_args(output, "--max_train_steps", "2", *extra))
        assert not list(output.glob("checkpoint-*")) and not (output / "pipeline").exists()


def test_input_errors_are_clear(micro_args, run_training_in_process, tmp_path):
    with pytest.raises(CommandError, match="fewer than one discriminator batch"):
        run_training_in_process(micro_args(tmp_path / "a", "--train_batch_size", "32", "--gen_batch_size", "32"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CommandError, match="No images found in --train_data_dir"):
        run_training_in_process(micro_args(tmp_path / "b", "--train_data_dir", str(empty)))
    with pytest.raises(CommandError, match="not a finished checkpoint folder"):
        run_training_in_process(micro_args(tmp_path / "c", "--resume_from_checkpoint", "checkpoint-9"))


def test_resume_refuses_settings_that_change_the_data_order(reference_run):
    with pytest.raises(CommandError, match="--train_batch_size 4 -> 8"):
        check_resume_settings(reference_run / "checkpoint-6",
                              {**json.loads((reference_run / "checkpoint-6" / ARGS_FILE).read_text()),
                               "train_batch_size": 8})
