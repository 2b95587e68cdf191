"""Licence, citation and install metadata agree with each other and with every zoo model card."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARXIV = "2603.23701"


def pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def test_license_file_matches_pyproject():
    text = (REPO / "LICENSE").read_text()
    assert pyproject()["license"] == "Apache-2.0"
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_citation_cff():
    yaml = pytest.importorskip("yaml")
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "software"
    assert cff["version"] == pyproject()["version"] and cff["license"] == pyproject()["license"]
    assert cff["repository-code"] == pyproject()["urls"]["Repository"]
    paper = cff["references"][0]
    assert [a["family-names"] for a in paper["authors"]] == ["Wei", "Du", "Yu", "Tiwari", "Li", "Xu", "Wang"]
    assert ARXIV in paper["identifiers"][0]["value"] and paper["year"] == 2026


def test_readme_bibtex_and_changelog():
    readme = (REPO / "README.md").read_text()
    entries = re.findall(r"```bibtex\n(.*?)```", readme, re.S)
    assert len(entries) == 2
    paper = next(e for e in entries if ARXIV in e)
    assert "Diminishing Returns of Early-Exit Decoding" in paper and "Wei and Du and Yu and Tiwari" in paper
    assert all(e.count("{") == e.count("}") for e in entries)
    changelog = (REPO / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{pyproject()['version']}]" in changelog


def test_every_zoo_card_states_its_licences():
    from eeutils.zoo import list_zoo, load_card
    from eeutils.zoo.build import card_markdown, license_fields

    names = list_zoo()
    assert len(names) >= 10
    for name in names:
        card = load_card(name)
        assert card["license"] == pyproject()["license"], name
        assert set(card["training_data_licenses"]) == {"prose", "technical", "task"}, name
        assert "public domain" in card["training_data_licenses"]["prose"]
        assert "PSF" in card["training_data_licenses"]["technical"]
        md = (REPO / "data" / "zoo" / name / "CARD.md").read_text()
        assert md == card_markdown(card) and "## Licence" in md, f"{name}: CARD.md out of date with card.json"
    assert license_fields()["license"] == pyproject()["license"]  # what the builder writes into new cards


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize("index", ["", "https://download.pytorch.org/whl/cpu"])
def test_makefile_torch_index(index, tmp_path):
    out = subprocess.run(["make", "-n", "-B", "setup", f"VENV={tmp_path / 'venv'}", f"TORCH_INDEX={index}"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    torch_line = next(line for line in out.splitlines() if '"torch==' in line)
    assert ("--index-url" in torch_line) == bool(index)
    if index:
        assert torch_line.endswith(f'--index-url "{index}"')
