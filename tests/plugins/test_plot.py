"""``selfdev plot``: a run's figure and a sweep's curves are written as valid PNG, SVG and PDF
files from a real (synthetic, engine-shaped) database, and the plotted numbers are the run's."""
from __future__ import annotations

import json
import statistics
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from selfdev.engine.cli import cli
from selfdev.store import EventStore, NewEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import research_runs  # noqa: E402

pytest.importorskip("matplotlib")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """research_runs' four runs, plus a sweep over temperature.beta (3 values x 2 seeds)."""
    path = research_runs.write_db(tmp_path_factory.mktemp("plot") / "runs.db")
    with EventStore(path, writer="tests/test_plot") as store:
        for beta in (0.0, 0.2, 0.4):
            for seed in (0, 1):
                research_runs.write_run(store, f"sweep-b{beta}-s{seed}", seed, beta, "digits",
                                        "", ["sweep:beta"], "finished")
    return path


def plot(db, *args):
    return CliRunner().invoke(cli, ["plot", *map(str, args), "--db", str(db)])


def test_run_figure_is_a_valid_png_with_the_runs_numbers(db, tmp_path):
    from PIL import Image

    out = tmp_path / "figs" / "run.png"
    result = plot(db, "run-a", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(out) as image:
        image.verify()
    with Image.open(out) as image:
        assert image.size[0] > 400 and image.size[1] > 300
    data = json.loads(result.output)["data"]
    first = data["iterations"][0]
    expected = [research_runs.score(0, 1, i) for i in range(research_runs.CANDIDATES)]
    assert first["scores"] == [s for s in expected if s is not None]
    assert first["best"] == max(first["scores"])
    assert first["mean"] == pytest.approx(statistics.mean(first["scores"]), abs=1e-4)
    assert first["executable_rate"] == round(5 / 6, 4)
    assert {"method": "seed", "dev": 30.0} in data["baselines"]


@pytest.mark.parametrize("ref", ["run-c", "run-a"])
def test_run_figure_as_svg_parses_as_xml(db, tmp_path, ref):
    """run-c failed after its first iteration: a partial run is drawn too."""
    out = tmp_path / "run.svg"
    result = plot(db, ref, "--out", out)
    assert result.exit_code == 0, result.output
    root = ET.parse(out).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert f"wrote {out}" in result.output


def test_sweep_curves_have_intervals_over_seeds(db, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "sweep.png"
    result = plot(db, "--sweep", "beta", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert imread(out).ndim == 3  # matplotlib reads it back as an RGB(A) image
    data = json.loads(result.output)["data"]
    assert data["x"] == "temperature.beta"
    [line] = data["lines"]
    assert [p["x"] for p in line["points"]] == [0.0, 0.2, 0.4]
    point = line["points"][1]
    assert point["n"] == 2
    best = [max(s for t in (1, 2) for i in range(6)
                if (s := research_runs.score(seed, t, i)) is not None) for seed in (0, 1)]
    assert point["best_dev"]["mean"] == pytest.approx(statistics.mean(best))
    assert point["best_dev"]["lo"] < point["best_dev"]["mean"] < point["best_dev"]["hi"]
    svg = tmp_path / "sweep.svg"
    assert plot(db, "--sweep", "beta", "--metric", "best_test", "--out", svg).exit_code == 0
    ET.parse(svg)


def test_family_lines_follow_the_most_used_families():
    from selfdev.plugins.commands.plot import family_lines

    iters = [{"iteration": 1, "families": {"mean": 0.9, "sign": 0.5, "drop": 0.1}},
             {"iteration": 2, "families": {"sign": 0.8, "mean": 0.4}},
             {"iteration": 3, "families": None}]  # a log that does not know them
    assert family_lines(iters, most=2) == {"mean": [(1, 90.0), (2, 40.0)],
                                           "sign": [(1, 50.0), (2, 80.0)]}
    assert family_lines([{"iteration": 1, "families": None}]) == {}


def test_pdf_is_written(db, tmp_path):
    out = tmp_path / "run.pdf"
    assert plot(db, "latest", "--out", out).exit_code == 0
    assert out.read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("args, message", [
    (["run-a", "--out", "fig.jpg"], "--out fig.jpg: the file name must end in .png, .svg, .pdf"),
    (["--out", "fig.png"], "plot draws one run or one sweep: give RUN or --sweep NAME"),
    (["run-a", "--sweep", "beta", "--out", "f.png"], "plot draws one run or one sweep"),
    (["run-a", "--x", "temperature.beta", "--out", "f.png"], "--x and --metric shape a sweep"),
    (["nope", "--out", "f.png"], "no run 'nope'"),
    (["--sweep", "nope", "--out", "f.png"], "no run has tag sweep:nope"),
    (["--sweep", "beta", "--x", "run.top_k", "--out", "f.png"],
     "--x 'run.top_k': the runs of sweep 'beta' do not vary it; they vary temperature.beta"),
])
def test_bad_input_is_one_line(db, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)  # nothing may be written where --out points
    result = CliRunner().invoke(cli, ["plot", *args, "--db", str(db)])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_it_says_how_to_install_it(db, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if absent
    out = tmp_path / "run.png"
    result = plot(db, "run-a", "--out", out)
    assert result.exit_code == 2
    assert result.output.strip() == ("error: selfdev plot needs matplotlib: pip install "
                                     "'selfdev[plot]' (or pip install matplotlib)")
    assert not out.exists()


def test_a_run_without_iterations_is_refused(tmp_path):
    path = tmp_path / "runs.db"
    with EventStore(path, writer="tests/test_plot") as store:
        store.append("run-new", [NewEvent("run.started", {"config": {}, "domain": "digits"})])
    out = tmp_path / "run.png"
    result = plot(path, "run-new", "--out", out)
    assert result.exit_code == 2
    assert result.output.strip() == "error: run run-new has no iteration yet: nothing to plot"
    assert not out.exists()
