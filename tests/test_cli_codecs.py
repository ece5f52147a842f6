"""Link codecs through the plan file and `coinfer plan --codec`: shown, saved, read back, checked."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from coinfer.api import plan
from coinfer.cli import main
from coinfer.codec_model import Codec
from coinfer.errors import CodecError, PlanError
from coinfer.files.plan_file import load_plan, plan_from_dict, plan_to_dict, save_plan
from coinfer.problem import Problem
from tests.conftest import TOY_CHAIN, TOY_CLUSTER


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    graph, cluster = tmp_path / "g.json", tmp_path / "c.yaml"
    graph.write_text(json.dumps(TOY_CHAIN))
    cluster.write_text(yaml.safe_dump(TOY_CLUSTER))
    return graph, cluster


def test_plan_file_round_trips_codecs(toy_problem: Problem, tmp_path: Path) -> None:
    codecs = {("phone", "edge"): Codec("fp16", "lz4"), ("edge", "phone"): Codec("int8")}
    chosen = replace(plan(toy_problem, placement="a@phone | b@edge"), codecs=codecs)
    path = tmp_path / "plan.json"
    save_plan(path, chosen, toy_problem)
    assert json.loads(path.read_text())["codecs"] == {"phone->edge": "fp16+lz4", "edge->phone": "int8"}
    again, _ = load_plan(path)
    assert again.codecs == codecs and str(again) == str(chosen)


def test_plan_file_without_codecs_has_no_field(toy_problem: Problem) -> None:
    doc = plan_to_dict(plan(toy_problem, placement="a@phone | b@edge"), toy_problem)
    assert "codecs" not in doc
    assert plan_from_dict(doc)[0].codecs == {}


@pytest.mark.parametrize(("codecs", "error", "expected"), [
    ({"phone->edge": "fp17"}, CodecError, "plan.json: field 'codecs': link 'phone->edge': cannot read codec 'fp17'"),
    ({"phone->gpu": "fp16"}, PlanError, "plan.json: field 'codecs': link 'phone->gpu' names unknown device(s) ['gpu']"),
    ({"phone edge": "fp16"}, PlanError, "should look like 'source->target'"),
    ({"phone->phone": "fp16"}, PlanError, "has no link phone->phone"),
])
def test_plan_file_codecs_are_checked(toy_problem: Problem, codecs: dict[str, str], error: type[Exception],
                                      expected: str) -> None:
    doc = plan_to_dict(plan(toy_problem, placement="a@phone | b@edge"), toy_problem)
    doc["codecs"] = codecs
    with pytest.raises(error) as info:
        plan_from_dict(doc, "plan.json")
    assert expected in str(info.value)


def test_cli_codec_for_every_link_is_shown_saved_and_costed(files, capsys, tmp_path) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    out = tmp_path / "plan.json"
    argv = ["plan", str(graph), "--cluster", str(cluster), "--placement", "a@phone | b@edge"]
    assert main([*argv, "--codec", "fp16", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "codecs     phone->edge fp16, edge->phone fp16" in text
    assert "wire MB" in text and "on wire    1.000 MB of 2.001 MB raw" in text
    assert json.loads(out.read_text())["codecs"] == {"phone->edge": "fp16", "edge->phone": "fp16"}
    # Half the bytes of a over the 1 MB/s link: about a second less than the 3.231 s without codecs.
    assert main(["cost", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["codecs"] == {"phone->edge": "fp16", "edge->phone": "fp16"}
    assert doc["predicted"]["latency_s"] == pytest.approx(3.231 - 1.0005, abs=0.02)
    assert doc["predicted"]["wire_bytes"] == 1_000_500


def test_cli_codec_for_one_link_wins_over_every_link(files, capsys) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    assert main(["plan", str(graph), "--cluster", str(cluster), "--solver", "chain-dp", "--codec", "phone->edge=int8",
                 "--codec", "zstd", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["codecs"] == {"phone->edge": "int8", "edge->phone": "none+zstd"}


@pytest.mark.parametrize(("codec", "expected"), [
    ("fp17", "--codec: link 'phone->edge': cannot read codec 'fp17'; valid codecs are"),
    ("phone->cloud=fp16", "--codec: link 'phone->cloud' names unknown device(s) ['cloud']"),
    ("phone=fp16", "--codec: link 'phone' should look like 'source->target'"),
])
def test_cli_bad_codec_is_a_clear_error(files, capsys, codec: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    graph, cluster = files
    assert main(["plan", str(graph), "--cluster", str(cluster), "--codec", codec]) == 2
    assert expected in capsys.readouterr().err
