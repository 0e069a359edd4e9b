"""The committed configuration reference matches the settings table it is generated from."""

from pathlib import Path

from sidecar.shell.config import VARIABLES
from sidecar.tools.reference import configuration_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_docs_configuration_is_generated_from_the_settings() -> None:
    assert DOC.read_text() == configuration_markdown(), (
        "docs/configuration.md is stale: run `iterum-sidecar config-reference > "
        "docs/configuration.md`")


def test_every_variable_is_documented() -> None:
    text = DOC.read_text()
    for variable in VARIABLES:
        assert f"| `{variable.name}` |" in text
        assert variable.doc.strip(), variable.name
