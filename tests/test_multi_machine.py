"""Several machines: two `accelerate launch` commands on this host, one process each, joined through
127.0.0.1 as machines 0 and 1 with the committed `accelerate_configs/multi_node.yaml` (CPU, gloo); the ranks train in
step; a checkpoint of 2 processes is not resumed by 1; an --output_dir the machines do not share is refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT, SUBPROCESS_ENV, TRAIN_SCRIPT, free_port

from transgan_hf.cli import CommandError

pytestmark = pytest.mark.usefixtures("single_thread")

CONFIGS = ROOT / "accelerate_configs"

DIGEST_WRAPPER = """
import faulthandler, hashlib, json, sys
import torch

faulthandler.dump_traceback_later(240, exit=True)  # a stuck rank prints where it waits and exits
from transgan_hf.training.loop import main


class WeightDigest:  # every 2 steps and at the end, on every process: a hash of its networks
    every_steps = 2

    def __call__(self, context):
        digest = {{}}
        for name, model in (("generator", context.generator), ("discriminator", context.discriminator),
                            ("ema", context.pipeline.generator)):
            flat = torch.cat([p.detach().flatten().cpu() for p in model.parameters()])
            digest[name] = hashlib.sha256(flat.numpy().tobytes()).hexdigest()
        rank = context.accelerator.process_index
        with open({folder!r} + f"/digest_rank{{rank}}_step{{context.step}}.json", "w") as handle:
            json.dump({{"world": context.accelerator.num_processes, **digest}}, handle)
        return {{}}


main(sys.argv[1:], evaluation_hooks=[WeightDigest()])
"""


def launch_two_machines(script: Path, flags_of_machine) -> list[subprocess.CompletedProcess]:
    """Machines 0 and 1 running `script` (`flags_of_machine(rank)`: the flags of each), started together; their
    results."""
    port = free_port()
    running = []
    for rank in (0, 1):
        command = ["accelerate", "launch", "--config_file", str(CONFIGS / "multi_node.yaml"), "--num_machines", "2",
                   "--num_processes", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                   "--main_process_port", str(port), "--dynamo_backend", "no", str(script), *flags_of_machine(rank)]
        running.append(subprocess.Popen(command, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))
    results = []
    for process in running:
        try:
            stdout, stderr = process.communicate(timeout=420)
        except subprocess.TimeoutExpired:
            for other in running:
                other.kill()
            raise
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def test_committed_accelerate_configs_load_and_describe_their_machines():
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    expected = {"one_gpu.yaml": (DistributedType.NO, 1, 1), "eight_gpus.yaml": (DistributedType.MULTI_GPU, 8, 1),
                "multi_node.yaml": (DistributedType.MULTI_GPU, 16, 2)}
    assert sorted(path.name for path in CONFIGS.glob("*.yaml")) == sorted(expected)
    for name, (kind, processes, machines) in expected.items():
        config = load_config_from_file(str(CONFIGS / name))
        assert (config.distributed_type, config.num_processes, config.num_machines) == (kind, processes, machines)


def test_two_machines_train_in_step_and_a_single_process_does_not_resume_them(micro_args, run_training_in_process,
                                                                               tmp_path):
    output = tmp_path / "run"
    wrapper = tmp_path / "digest_wrapper.py"
    wrapper.write_text(DIGEST_WRAPPER.format(folder=str(tmp_path)))
    machines = launch_two_machines(wrapper, lambda rank: micro_args(output, "--max_train_steps", "4",
                                                                     "--checkpointing_steps", "4"))
    for rank, finished in enumerate(machines):
        assert finished.returncode == 0, f"machine {rank}: {finished.stderr[-6000:]}"
    for step in (2, 4):
        digests = [json.loads((tmp_path / f"digest_rank{rank}_step{step}.json").read_text()) for rank in (0, 1)]
        assert digests[0]["world"] == 2
        assert digests[0] == digests[1], f"the machines' weights differ at step {step}"
    assert all((output / "checkpoint-4" / f"training_state_{rank}.pt").is_file() for rank in (0, 1))
    assert (output / "pipeline" / "generator" / "model.safetensors").is_file()

    with pytest.raises(CommandError, match=r"written by 2 process\(es\) and this run has 1; every process resumes its "
                                           r"own data position and random streams, so resume with `accelerate launch "
                                           r"--num_processes 2`"):
        run_training_in_process(micro_args(output, "--max_train_steps", "6", "--resume_from_checkpoint", "latest"))
    assert not (output / "checkpoint-6").exists()


def test_an_output_dir_the_machines_do_not_share_is_refused_before_training(micro_args, tmp_path):
    """Machine 1 is given another folder, as its own disk would be: both stop with one clear error, nothing trained."""
    outputs = [tmp_path / "machine0", tmp_path / "machine1"]
    machines = launch_two_machines(TRAIN_SCRIPT, lambda rank: micro_args(outputs[rank], "--max_train_steps", "2"))
    assert [finished.returncode for finished in machines] != [0, 0]
    assert ("error: argument --output_dir: " + repr(str(outputs[0])) + " is not shared by every process (process(es) "
            "1 cannot see what the main process writes there)") in machines[0].stderr
    assert not list(outputs[0].glob("checkpoint-*")) and not list(outputs[1].glob("checkpoint-*"))
