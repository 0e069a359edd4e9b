"""`iterum-sidecar graph`: the diagrams are drawn from the lifecycle tables, and the committed
docs/lifecycle.md is what the command generates."""

from __future__ import annotations

import importlib.util
import io
import re
import shutil
from pathlib import Path

import pytest

from sidecar.cli import main
from sidecar.tools import graph
from states import BOARD, INPUT, INTAKE, LIFECYCLES, OUTPUT, STEP

DOC = Path(__file__).resolve().parents[2] / "docs" / "lifecycle.md"
EDGE = re.compile(r"^    (\S+) --> (\S+?)(?:: (\S+))?$")


def test_docs_lifecycle_is_generated_from_the_tables() -> None:
    assert DOC.read_text() == graph.markdown(), (
        "docs/lifecycle.md is stale: run `iterum-sidecar graph --format markdown "
        "--out docs/lifecycle.md`")


@pytest.mark.parametrize("lc", LIFECYCLES, ids=lambda lc: lc.name)
def test_the_mermaid_diagram_has_exactly_the_transitions_of_the_table(lc) -> None:
    text = graph.mermaid(lc)
    assert text.startswith("stateDiagram-v2\n")
    edges = [EDGE.match(line).groups() for line in text.splitlines()[1:]]
    expected = {(s, d, t) for t, sources, d in lc.transitions
                for s in (sources if isinstance(sources, tuple) else (sources,))}
    assert {e for e in edges if e[2]} == expected
    assert ("[*]", lc.initial, None) in edges
    assert {s for s, d, t in edges if d == "[*]"} == set(lc.terminal)


def test_the_docs_page_has_a_diagram_and_a_table_per_lifecycle() -> None:
    text = graph.markdown()
    assert text.count("```mermaid\nstateDiagram-v2\n") == len(LIFECYCLES)
    for lc in (INPUT, OUTPUT, STEP, INTAKE, BOARD):
        assert f"\n## {lc.name}\n" in text
    assert "| `give_back` | `received`, `downloaded`, `dispatched`, `processed`, `uploaded`, " \
           "`published`, `dead_lettering` | `requeued` |" in text


def test_the_command_prints_mermaid_for_one_or_every_lifecycle(capsys) -> None:
    assert main(["graph", "--machine", "output"]) == 0
    assert capsys.readouterr().out == graph.mermaid(OUTPUT)
    assert main(["graph"]) == 0
    out = capsys.readouterr().out
    assert out.count("stateDiagram-v2") == len(LIFECYCLES)
    assert "%% input lifecycle\n" in out and "%% step lifecycle\n" in out
    assert "%% intake lifecycle\n" in out and "%% board lifecycle\n" in out


def test_the_command_writes_the_docs_page(tmp_path: Path) -> None:
    target = tmp_path / "lifecycle.md"
    assert main(["graph", "--format", "markdown", "--out", str(target)]) == 0
    assert target.read_text() == DOC.read_text()


def test_images_without_graphviz_say_what_to_install(monkeypatch, capsys) -> None:
    monkeypatch.setattr(graph.shutil, "which", lambda _: None)
    monkeypatch.setattr(graph.importlib.util, "find_spec", lambda _: None)
    err = io.StringIO()
    assert graph.run_graph("svg", "input", err=err) == 1
    message = err.getvalue()
    assert "SVG and PNG need Graphviz, which is not installed" in message
    assert "apt-get install graphviz" in message and "iterum-sidecar[graph]" in message
    assert "--format mermaid" in message


def test_a_png_needs_an_output_file(capsys) -> None:
    assert main(["graph", "--format", "png"]) == 2
    assert "PNG is binary: give --out PATH" in capsys.readouterr().err


HAVE_GRAPHVIZ = bool(importlib.util.find_spec("pygraphviz")) or bool(
    importlib.util.find_spec("graphviz") and shutil.which("dot"))


@pytest.mark.skipif(not HAVE_GRAPHVIZ, reason="Graphviz is not installed (optional)")
@pytest.mark.parametrize("lc", LIFECYCLES, ids=lambda lc: lc.name)
def test_svg_through_graphmachine_shows_every_state_and_marks_terminals(lc, tmp_path: Path
                                                                        ) -> None:
    target = tmp_path / f"{lc.name}.svg"
    assert main(["graph", "--format", "svg", "--machine", lc.name, "--out", str(target)]) == 0
    svg = target.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    titles = set(re.findall(r"<title>([^<&]+)</title>", svg))
    assert set(lc.states) <= titles
    for trigger, _, _ in lc.transitions:
        assert f">{trigger}</text>" in svg


@pytest.mark.skipif(not HAVE_GRAPHVIZ, reason="Graphviz is not installed (optional)")
def test_png_is_written(tmp_path: Path) -> None:
    target = tmp_path / "step.png"
    assert main(["graph", "--format", "png", "--machine", "step", "--out", str(target)]) == 0
    assert target.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
