"""Model cards: YAML metadata the Hub reads (round trip through `ModelCard.load`), the licence (the user's, the
official one of converted weights, or a default the card admits to), the intended-uses section, evaluation results
in `model-index`, the table and `.eval_results/` (replaced, never duplicated; per-metric protocols; unverified
Inception weights named so), cards of a real training run without absolute paths, argument checks, and a usage
snippet that runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import StandInFeatures, place_in_hub_cache, tiny_pipeline
from huggingface_hub import ModelCard

from transgan_hf.cli import main
from transgan_hf.convert_official import OFFICIAL_LICENSE_NOTE
from transgan_hf.metrics import ReferenceStatistics, register_feature_extractor, save_statistics
from transgan_hf.metrics.inception import (
    UNVERIFIED_INCEPTION_PROTOCOL,
    FIDInceptionFeatureExtractor,
    FIDInceptionV3,
    load_fid_inception,
)
from transgan_hf.model_card import (
    LOCAL_FOLDER,
    TEMPLATE_PATH,
    make_model_card,
    model_card_entries,
    portable_command,
    portable_path,
    update_model_card_metrics,
)

FID = {"name": "FID", "type": "fid", "value": 31.25, "dataset": "uoft-cs/cifar10", "split": "train",
       "protocol": "clean-fid, TF Inception, train split statistics", "weights": "ema", "num_images": 50000,
       "seed": 0}
INCEPTION_SCORE = {"name": "IS", "type": "inception_score", "value": 7.5, "dataset": "uoft-cs/cifar10",
                   "protocol": "10 splits", "num_images": 50000}


def standin_features(weights_path=None) -> StandInFeatures:
    return StandInFeatures()


register_feature_extractor("standin", standin_features)


def eval_results(folder: Path) -> dict[str, list]:
    """File name -> parsed YAML of the folder's `.eval_results/`."""
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted((folder / ".eval_results").glob("*"))}


def test_card_metadata_round_trips_through_model_card_load(tmp_path):
    training = {"Preset": "tiny", "Steps": 1000, "Command": "transgan train --preset tiny | tee log.txt"}
    card = make_model_card(tiny_pipeline(), license="mit", datasets=["uoft-cs/cifar10"], training=training,
                           metrics=[FID, INCEPTION_SCORE], repo_id="org/transgan-tiny", samples_image="samples.png",
                           remote_code=True, base_model="org/transgan-cifar10-official")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.license == "mit" and data.library_name == "diffusers"
    assert data.base_model == "org/transgan-cifar10-official"
    assert data.pipeline_tag == "unconditional-image-generation"
    assert {"gan", "transgan", "unconditional-image-generation", "arxiv:2102.07074"} <= set(data.tags)
    assert data.datasets == ["uoft-cs/cifar10"] and data.model_name == "transgan-tiny"
    results = {r.metric_type: r for r in data.eval_results}
    assert results["fid"].metric_value == 31.25 and results["inception_score"].metric_value == 7.5
    assert results["fid"].metric_args == {"protocol": FID["protocol"], "weights": "ema", "num_images": 50000, "seed": 0}
    assert results["fid"].task_type == "unconditional-image-generation" and results["fid"].dataset_split == "train"
    metadata = yaml.safe_load(loaded.content.split("---")[1])
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["type"] == "fid"
    text = loaded.text
    assert 'TransGANPipeline.from_pretrained("org/transgan-tiny")' in text
    assert 'DiffusionPipeline.from_pretrained("org/transgan-tiny", trust_remote_code=True)' in text
    assert "transgan generate --model org/transgan-tiny" in text
    assert "| Command | transgan train --preset tiny \\| tee log.txt |" in text
    assert ("| FID | 31.25 | uoft-cs/cifar10 (train) | ema | 50000 | 0 | clean-fid, TF Inception, train split "
            "statistics |") in text
    assert "![Samples from this model](samples.png)" in text
    assert "@inproceedings{jiang2021transgan" in text and "restricted to [-2, 2]" in text
    assert "released under the `mit` licence" in text and "nobody chose" not in text
    assert "{{" not in loaded.content and "{%" not in loaded.content and "{#" not in loaded.content


def test_defaults_and_a_pipeline_without_discriminator():
    card = make_model_card(tiny_pipeline(with_discriminator=False))
    assert card.data.license == "apache-2.0" and card.data.eval_results is None and card.data.datasets is None
    assert card.data.base_model is None
    license_section = card.text[card.text.index("## License"):card.text.index("## Citation")]
    assert "default, `apache-2.0`: nobody chose one" in license_section  # a licence left at the default says so
    assert "No training details were recorded" in card.text and "No evaluation results yet" in card.text
    assert "num_candidates=k" not in card.text and "not included" in card.text
    assert 'from_pretrained("path/to/this/folder")' in card.text
    # No code in the folder: the card does not offer diffusers' remote-code loading for it, but says how to get it.
    assert 'from_pretrained("path/to/this/folder", trust_remote_code=True)' not in card.text
    assert "save_pretrained(folder, remote_code=True)" in card.text


def intended_uses(card: ModelCard) -> str:
    return card.text[card.text.index("## Intended uses & limitations"):card.text.index("## How to use")]


def test_the_intended_uses_section_says_what_the_model_does_and_cannot_and_what_data_it_saw():
    section = intended_uses(make_model_card(tiny_pipeline(), datasets=["uoft-cs/cifar10"]))
    assert "**Use it for** sampling 16×16 images" in section and "**It cannot**" in section
    assert "unconditional" in section and "**Do not use it**" in section
    link = "[uoft-cs/cifar10](https://huggingface.co/datasets/uoft-cs/cifar10)"
    assert f"**Training data.** Trained on {link}." in section
    assert "Not recorded in this card" in intended_uses(make_model_card(tiny_pipeline()))
    assert "official TransGAN checkpoint's training set" in intended_uses(
        make_model_card(tiny_pipeline(), converted_from_official=True))
    told = intended_uses(make_model_card(tiny_pipeline(), training_data="My cat photos (1,000 images)."))
    assert "**Training data.** My cat photos (1,000 images)." in told


def test_converted_official_weights_carry_the_non_commercial_licence():
    card = make_model_card(tiny_pipeline(), license="mit", converted_from_official=True)
    assert card.data.license == "other" and card.data.license_name == "transgan-non-commercial"
    assert card.data.license_link.endswith("LICENSE.txt")
    assert OFFICIAL_LICENSE_NOTE in card.text and "converted-official-weights" in card.data.tags


def test_save_pretrained_writes_the_card_and_eval_results_and_updates_replace_rows(tmp_path):
    folder = tmp_path / "pipe"
    tiny_pipeline().save_pretrained(folder, model_card_kwargs={"metrics": [FID], "training": {"Steps": "10"}})
    assert [entry[0]["dataset"] for entry in eval_results(folder).values()] == [{"id": "uoft-cs/cifar10",
                                                                                 "task_id": "fid"}]
    update_model_card_metrics(folder, [INCEPTION_SCORE, {**FID, "value": 20.5, "num_images": 10000, "seed": 1}])
    card = ModelCard.load(folder / "README.md")
    values = {(r.metric_type, r.dataset_type): r.metric_value for r in card.data.eval_results}
    assert values == {("fid", "uoft-cs/cifar10"): 20.5, ("inception_score", "uoft-cs/cifar10"): 7.5}
    assert [r.metric_type for r in card.data.eval_results] == ["fid", "inception_score"]  # replaced in place
    assert "| Steps | 10 |" in card.text
    assert "31.25" not in card.text and "| FID | 20.5 |" in card.text and "| IS | 7.5 |" in card.text
    assert card.text.count("transgan-metrics:start") == 1
    files = eval_results(folder)
    assert sorted((entry[0]["dataset"]["task_id"], entry[0]["value"]) for entry in files.values()) == [
        ("fid", 20.5), ("inception_score", 7.5)]
    fid_entry = next(entry[0] for entry in files.values() if entry[0]["dataset"]["task_id"] == "fid")
    assert fid_entry["notes"] == ("FID; split train; ema weights; 10000 images; seed 1; protocol: clean-fid, TF "
                                  "Inception, train split statistics")
    update_model_card_metrics(folder, [{**FID, "value": 20.5, "num_images": 10000, "seed": 1}])
    assert ModelCard.load(folder / "README.md").content == card.content and eval_results(folder) == files  # idempotent

    # Another protocol, other weights or another split is another result.
    others = [{**FID, "protocol": "other"}, {**FID, "weights": "raw"}, {**FID, "split": "test"}]
    update_model_card_metrics(folder, others)
    assert len(ModelCard.load(folder / "README.md").data.eval_results) == 5 and len(eval_results(folder)) == 5
    # Saving the pipeline again (new weights) replaces the results: none are left over from the old weights.
    (folder / ".eval_results" / "leaderboard-of-someone-else.yaml").write_text("- {}\n")
    tiny_pipeline().save_pretrained(folder)
    assert not (folder / ".eval_results").exists() and ModelCard.load(folder / "README.md").data.eval_results is None


def test_eval_results_files_are_left_out_for_local_datasets_and_unverified_weights_and_others_stay(tmp_path):
    folder = tmp_path / "pipe"
    tiny_pipeline().save_pretrained(folder, model_card_kwargs={"metrics": [FID]})
    (folder / ".eval_results" / "hle.yaml").write_text("- dataset: {id: cais/hle, task_id: default}\n  value: 1\n")
    local = {**FID, "dataset": f"image folder {LOCAL_FOLDER}/images"}
    unverified = {**FID, "name": "FID (unverified Inception weights)", "protocol": UNVERIFIED_INCEPTION_PROTOCOL}
    update_model_card_metrics(folder, [local, unverified])
    card = ModelCard.load(folder / "README.md")
    assert len(card.data.eval_results) == 3  # all in model-index and the table
    assert [entry[0]["dataset"]["id"] for entry in eval_results(folder).values()] == ["cais/hle", "uoft-cs/cifar10"]


def test_the_upload_includes_eval_results_but_no_other_hidden_file(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    from transgan_hf.hub import upload_pipeline_folder

    folder = tmp_path / "pipe"
    tiny_pipeline().save_pretrained(folder, model_card_kwargs={"metrics": [FID]})
    (folder / ".cache").mkdir()
    (folder / ".cache" / "lock").write_text("x")
    (folder / ".notes").write_text("x")
    (folder / "generator" / ".DS_Store").write_text("x")
    uploaded = []

    def upload_folder(self, repo_id, folder_path, commit_message=None, create_pr=False, ignore_patterns=None):
        paths = [path.relative_to(folder_path).as_posix() for path in Path(folder_path).rglob("*") if path.is_file()]
        uploaded.extend(filter_repo_objects(paths, ignore_patterns=ignore_patterns))
        return "https://huggingface.co/org/x/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    upload_pipeline_folder(huggingface_hub.HfApi(), folder, "org/x")
    hidden = sorted(path for path in uploaded if "/." in f"/{path}")
    assert len(hidden) == 1 and hidden[0].startswith(".eval_results/transgan-fid-uoft-cs-cifar10-")
    assert "README.md" in uploaded and "generator/model.safetensors" in uploaded


def test_metrics_are_added_to_a_hand_written_card(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n\n# My GAN\n\nHand-written.\n")
    update_model_card_metrics(tmp_path, [FID])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "mit" and card.data.eval_results[0].metric_value == 31.25
    assert card.data.model_name == tmp_path.name
    assert card.text.startswith("\n# My GAN\n\nHand-written.\n") and "## Evaluation" in card.text


# ---------------------------------------------------------------------------------------------------------------------
# Evaluation reports -> card rows
# ---------------------------------------------------------------------------------------------------------------------


def report(**changes) -> dict:
    base = {"metrics": {"fid": 12.5, "kid": 0.01, "kid_std": 0.002, "inception_score": 3.5, "inception_score_std": 0.1},
            "protocol": "NET", "num_images": 1000, "seed": 2, "reference": "/abs/stats/cifar_train.npz",
            "weights": {"kind": "raw"}, "options": {"kid_subsets": 7, "kid_subset_size": 50, "is_splits": 4}}
    return {**base, **changes}


def test_each_metric_row_carries_its_own_protocol_and_the_weights_kind():
    entries = {entry["type"]: entry for entry in model_card_entries(report(), "uoft-cs/cifar10", "train")}
    assert set(entries) == {"fid", "kid", "inception_score"}  # standard deviations are not rows
    assert entries["fid"]["protocol"] == f"NET; reference statistics {LOCAL_FOLDER}/cifar_train.npz"
    assert entries["kid"]["protocol"] == (
        "unbiased MMD² with the cubic polynomial kernel (as KID), mean over 7 subsets of up to 50 images; network: "
        f"NET; reference statistics {LOCAL_FOLDER}/cifar_train.npz")
    assert entries["inception_score"]["protocol"] == (
        "exp E[KL(p(y|x) ‖ p(y))] (as the Inception Score), mean over 4 splits; network: NET")
    assert all(entry["weights"] == "raw" and entry["seed"] == 2 and entry["num_images"] == 1000
               and entry["split"] == "train" for entry in entries.values())
    assert [e["name"] for e in entries.values()] == ["FID", "KID", "Inception Score"]
    # Training's report: reference "train", no options (evaluate_generator's defaults), the digit network's names.
    digits = model_card_entries(report(metrics={"kdd_mnist": 4.0, "digit_confidence_mnist": 0.9}, reference="train",
                                       options={}), "ylecun/mnist")
    assert digits[0]["protocol"].startswith("unbiased MMD² with the cubic polynomial kernel (as KID), mean over 100 "
                                            "subsets of up to 1000 images; network: NET; reference: the training")
    assert digits[1]["protocol"] == "mean top-class probability of the classifier; network: NET"


def test_an_unverified_inception_file_is_never_reported_under_the_published_protocol(tmp_path, monkeypatch):
    path = tmp_path / "inception.pth"
    import torch

    torch.save(FIDInceptionV3().state_dict(), path)  # the right layout, not the published file
    extractor = FIDInceptionFeatureExtractor(load_fid_inception(path))
    assert extractor.protocol == UNVERIFIED_INCEPTION_PROTOCOL
    assert "TTUR" not in extractor.protocol and "6726825d" not in extractor.protocol
    entries = model_card_entries(report(protocol=extractor.protocol), "uoft-cs/cifar10")
    assert [entry["name"] for entry in entries] == ["FID (unverified Inception weights)",
                                                    "KID (unverified Inception weights)",
                                                    "Inception Score (unverified Inception weights)"]
    assert all(UNVERIFIED_INCEPTION_PROTOCOL in entry["protocol"] for entry in entries)
    # The file with the published checksum (here: the checksum this file has) carries the published protocol.
    import transgan_hf.metrics.inception as inception

    monkeypatch.setattr(inception, "INCEPTION_WEIGHTS_SHA256_PREFIX", inception._sha256(path)[:8])
    extractor = FIDInceptionFeatureExtractor(load_fid_inception(path))
    assert extractor.protocol == FIDInceptionFeatureExtractor.protocol and "TTUR" in extractor.protocol
    assert model_card_entries(report(protocol=extractor.protocol), "uoft-cs/cifar10")[0]["name"] == "FID"


def test_transgan_evaluate_update_model_card_replaces_its_rows(tmp_path, capsys):
    folder = tmp_path / "pipe"
    tiny_pipeline().save_pretrained(folder, model_card_kwargs={"training": {"Generator weights": "EMA"}})
    features = np.random.default_rng(0).normal(size=(40, 8))
    reference = save_statistics(tmp_path / "stats.npz", ReferenceStatistics.from_features(features, True, "standin"))
    common = ["evaluate", "--model", str(folder), "--feature_extractor", "standin", "--reference", str(reference),
              "--num_images", "12", "--metrics", "fid,kid,is", "--kid_subsets", "3", "--kid_subset_size", "6",
              "--is_splits", "2", "--update_model_card", "--dataset_name", "org/noise", "--split", "train",
              "--no_progress"]
    for seed in ("0", "1"):  # a second evaluation of the same protocol replaces the rows
        assert main([*common, "--seed", seed]) == 0, capsys.readouterr().err
    assert main([*common, "--weights_kind", "raw"]) == 0  # other weights: rows of their own
    card = ModelCard.load(folder / "README.md")
    rows = [(r.metric_type, r.metric_args["weights"], r.metric_args["seed"]) for r in card.data.eval_results]
    assert rows == [("fid", "ema", 1), ("kid", "ema", 1), ("is", "ema", 1), ("fid", "raw", 0), ("kid", "raw", 0),
                    ("is", "raw", 0)]
    protocols = {r.metric_type: r.metric_args["protocol"] for r in card.data.eval_results}
    assert protocols["fid"] == "test stand-in network; reference statistics " + portable_path(reference)
    assert protocols["kid"].startswith("unbiased MMD² with the cubic polynomial kernel (as KID), mean over 3 subsets "
                                       "of up to 6 images; network: test stand-in network")
    assert protocols["is"].startswith("exp E[KL(p(y|x) ‖ p(y))] (as the Inception Score), mean over 2 splits")
    assert len(eval_results(folder)) == 6 and str(tmp_path) not in (folder / "README.md").read_text()


# ---------------------------------------------------------------------------------------------------------------------
# A training run's card: the user's licence, no absolute paths
# ---------------------------------------------------------------------------------------------------------------------


def test_portable_paths_and_commands(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert portable_path(tmp_path / "runs" / "a") == "runs/a" and portable_path("data/x") == "data/x"
    assert portable_path("/elsewhere/images") == f"{LOCAL_FOLDER}/images"
    assert portable_path("C:\\Users\\me\\images") == f"{LOCAL_FOLDER}/images"
    command = f"accelerate launch /opt/t/train.py --output_dir {tmp_path}/run --train_data_dir=/data/photos --seed 1"
    assert portable_command(command) == ("accelerate launch '<local folder>/train.py' --output_dir run "
                                         "'--train_data_dir=<local folder>/photos' --seed 1")


def test_the_card_of_a_training_run_has_the_users_licence_and_no_absolute_path(
    micro_args, run_training_in_process, training_workspace, tmp_path, monkeypatch
):
    from transgan_hf.training.args import parse_args

    assert parse_args(micro_args(tmp_path / "x")).license is None  # no --license: the card says so (see above)
    reference = save_statistics(tmp_path / "reference.npz",
                                ReferenceStatistics(np.zeros(8), np.eye(8), feature_extractor="standin"))
    monkeypatch.chdir(tmp_path)
    run_training_in_process(micro_args(
        tmp_path / "run", "--max_train_steps", "1", "--license", "cc-by-nc-4.0", "--eval_steps", "1",
        "--eval_num_images", "4", "--eval_batch_size", "4", "--eval_feature_extractor", "standin",
        "--eval_metrics", "fid", "--eval_reference", str(reference),
    ))
    text = (tmp_path / "run" / "pipeline" / "README.md").read_text()
    assert str(tmp_path) not in text and str(training_workspace) not in text
    assert not re.search(r"(^|[\s'\"(=])/[\w.-]+/", text)  # no absolute path at all
    card = ModelCard.load(tmp_path / "run" / "pipeline" / "README.md")
    assert card.data.license == "cc-by-nc-4.0" and "chosen by whoever trained them" in card.text
    assert card.data.datasets is None and card.data.library_name == "diffusers"
    assert f"| dataset | image folder {LOCAL_FOLDER}/images |" in card.text
    assert "| Generator weights | EMA" in card.text
    command = re.search(r"\| exact command \| (.*) \|", card.text).group(1)
    assert f"--train_data_dir '{LOCAL_FOLDER}/images'" in command and "--output_dir run " in command
    assert "--eval_reference reference.npz" in command
    assert f"Trained on local images (image folder {LOCAL_FOLDER}/images, not published" in intended_uses(card)
    [result] = card.data.eval_results
    assert result.dataset_type == f"image folder {LOCAL_FOLDER}/images" and result.metric_args["weights"] == "ema"
    assert result.metric_args["protocol"] == "test stand-in network; reference statistics reference.npz"


# ---------------------------------------------------------------------------------------------------------------------
# Argument checks, usage snippet, template
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metrics", "match"),
    [
        ({"name": "FID"}, "list of dicts"),
        (["FID"], "must be a dict"),
        ([{"name": "FID", "type": "fid", "value": 1.0}], r"lacks \['dataset'\]"),
        ([{**FID, "samples": 10}], r"unknown keys \['samples'\]"),
        ([{**FID, "value": float("nan")}], "finite"),
        ([{**FID, "value": "9.3"}], "wrong type"),
        ([{**FID, "value": True}], "wrong type"),
        ([{**FID, "num_images": 0}], ">= 1"),
        ([{**FID, "seed": -1}], ">= 0"),
        ([{**FID, "weights": 1}], "wrong type"),
    ],
)
def test_bad_metrics(metrics, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        make_model_card(tiny_pipeline(), metrics=metrics)
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n")
    with pytest.raises(ValueError, match=match):
        update_model_card_metrics(tmp_path, metrics)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"license": ""}, "license"),
        ({"datasets": "uoft-cs/cifar10"}, "datasets"),
        ({"repo_id": " "}, "repo_id"),
        ({"samples_image": "/abs/grid.png"}, "relative"),
        ({"base_model": "not a repo"}, "base_model"),
        ({"training_data": " "}, "training_data"),
        ({"unknown": 1}, "unexpected keyword"),
    ],
)
def test_bad_card_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make_model_card(tiny_pipeline(), **kwargs)


def test_updating_a_folder_without_card(tmp_path):
    with pytest.raises(OSError, match="no README.md"):
        update_model_card_metrics(tmp_path, [FID])


def test_the_usage_snippet_runs(tmp_path, offline_hub, monkeypatch):
    tiny_pipeline().save_pretrained(tmp_path / "saved", model_card_kwargs={"repo_id": "org/transgan-tiny"})
    place_in_hub_cache(tmp_path / "saved", offline_hub, "org/transgan-tiny")
    card = (tmp_path / "saved" / "README.md").read_text()
    snippet = re.search(r"```python\n(.*?)```", card, flags=re.DOTALL).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet, "model card snippet", "exec"), {})
    assert (tmp_path / "sample.png").is_file()


def test_the_template_ships_inside_the_package():
    assert TEMPLATE_PATH.parent.name == "transgan_hf" and TEMPLATE_PATH.is_file()
    assert TEMPLATE_PATH.read_text().startswith("---\n{{ card_data }}\n---")


def test_the_bundled_demo_card_is_rendered_from_the_current_template():
    from transgan_hf import DEMO_MODEL_PATH, TransGANPipeline

    demo = ModelCard.load(Path(DEMO_MODEL_PATH) / "README.md")
    training_data = re.search(r"\*\*Training data\.\*\* (.*)", demo.text).group(1)
    rendered = make_model_card(TransGANPipeline.from_pretrained(DEMO_MODEL_PATH), datasets=["ylecun/mnist"],
                               training_data=training_data)
    assert intended_uses(demo) == intended_uses(rendered) and demo.data.library_name == rendered.data.library_name
