"""Model cards: YAML metadata round trip through `ModelCard.load`, the official licence of converted weights,
metric updates, argument checks, and a usage snippet that runs."""

from __future__ import annotations

import re

import pytest
import yaml
from helpers import place_in_hub_cache, tiny_pipeline
from huggingface_hub import ModelCard

from transgan_hf.convert_official import OFFICIAL_LICENSE_NOTE
from transgan_hf.model_card import TEMPLATE_PATH, make_model_card, update_model_card_metrics

FID = {"name": "FID", "type": "fid", "value": 31.25, "dataset": "uoft-cs/cifar10", "split": "train",
       "protocol": "clean-fid, TF Inception, train split statistics", "num_images": 50000}
INCEPTION_SCORE = {"name": "IS", "type": "inception_score", "value": 7.5, "dataset": "uoft-cs/cifar10",
                   "protocol": "10 splits", "num_images": 50000}


def test_card_metadata_round_trips_through_model_card_load(tmp_path):
    training = {"Preset": "tiny", "Steps": 1000, "Command": "transgan train --preset tiny | tee log.txt"}
    card = make_model_card(tiny_pipeline(), license="mit", datasets=["uoft-cs/cifar10"], training=training,
                           metrics=[FID, INCEPTION_SCORE], repo_id="org/transgan-tiny", samples_image="samples.png",
                           remote_code=True)
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.license == "mit" and data.library_name == "transgan_hf"
    assert data.pipeline_tag == "unconditional-image-generation"
    assert {"gan", "transgan", "unconditional-image-generation"} <= set(data.tags)
    assert data.datasets == ["uoft-cs/cifar10"] and data.model_name == "transgan-tiny"
    results = {r.metric_type: r for r in data.eval_results}
    assert results["fid"].metric_value == 31.25 and results["inception_score"].metric_value == 7.5
    assert results["fid"].metric_args == {"protocol": FID["protocol"], "num_images": 50000}
    assert results["fid"].task_type == "unconditional-image-generation" and results["fid"].dataset_split == "train"
    metadata = yaml.safe_load(loaded.content.split("---")[1])
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["type"] == "fid"
    text = loaded.text
    assert 'TransGANPipeline.from_pretrained("org/transgan-tiny")' in text
    assert 'DiffusionPipeline.from_pretrained("org/transgan-tiny", trust_remote_code=True)' in text
    assert "transgan generate --model org/transgan-tiny" in text
    assert "| Command | transgan train --preset tiny \\| tee log.txt |" in text
    assert "| FID | 31.25 | uoft-cs/cifar10 (train) | clean-fid, TF Inception, train split statistics | 50000 |" in text
    assert "![Samples from this model](samples.png)" in text
    assert "@inproceedings{jiang2021transgan" in text and "restricted to [-2, 2]" in text
    assert "{{" not in loaded.content and "{%" not in loaded.content


def test_defaults_and_a_pipeline_without_discriminator():
    card = make_model_card(tiny_pipeline(with_discriminator=False))
    assert card.data.license == "apache-2.0" and card.data.eval_results is None and card.data.datasets is None
    assert "No training details were recorded" in card.text and "No evaluation results yet" in card.text
    assert "num_candidates=k" not in card.text and "not included" in card.text
    assert 'from_pretrained("path/to/this/folder")' in card.text
    # No code in the folder: the card does not offer diffusers' remote-code loading for it, but says how to get it.
    assert 'from_pretrained("path/to/this/folder", trust_remote_code=True)' not in card.text
    assert "save_pretrained(folder, remote_code=True)" in card.text


def test_converted_official_weights_carry_the_non_commercial_licence():
    card = make_model_card(tiny_pipeline(), license="mit", converted_from_official=True)
    assert card.data.license == "other" and card.data.license_name == "transgan-non-commercial"
    assert card.data.license_link.endswith("LICENSE.txt")
    assert OFFICIAL_LICENSE_NOTE in card.text and "converted-official-weights" in card.data.tags


def test_save_pretrained_writes_the_card_and_metrics_can_be_updated(tmp_path):
    folder = tmp_path / "pipe"
    tiny_pipeline().save_pretrained(folder, model_card_kwargs={"metrics": [FID], "training": {"Steps": "10"}})
    update_model_card_metrics(folder, [INCEPTION_SCORE, {**FID, "value": 20.5, "num_images": 10000}])
    card = ModelCard.load(folder / "README.md")
    values = {(r.metric_type, r.dataset_type): r.metric_value for r in card.data.eval_results}
    assert values == {("fid", "uoft-cs/cifar10"): 20.5, ("inception_score", "uoft-cs/cifar10"): 7.5}
    assert "| Steps | 10 |" in card.text
    assert "31.25" not in card.text and "| FID | 20.5 |" in card.text and "| IS | 7.5 |" in card.text
    assert card.text.count("transgan-metrics:start") == 1
    update_model_card_metrics(folder, [{**FID, "value": 20.5, "num_images": 10000}])
    assert ModelCard.load(folder / "README.md").content == card.content  # idempotent
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_metrics_are_added_to_a_hand_written_card(tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\n---\n\n# My GAN\n\nHand-written.\n")
    update_model_card_metrics(tmp_path, [FID])
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.license == "mit" and card.data.eval_results[0].metric_value == 31.25
    assert card.data.model_name == tmp_path.name
    assert card.text.startswith("\n# My GAN\n\nHand-written.\n") and "## Evaluation" in card.text


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
