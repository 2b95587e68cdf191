"""The rendered book: built from a smoke run, one page per executed notebook, the findings page,
and every image a page references exists in the site."""
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.notebooks  # it runs notebooks first


@pytest.fixture(scope="module")
def smoke_run(smoke_series):
    out, summary = smoke_series  # the session's smoke run of notebooks 01-02 (tests/conftest.py)
    assert not summary["failed"], summary["failed"]
    return out


def referenced_files(page: Path) -> list[Path]:
    """Local files an HTML page loads as images (src attributes of <img>), resolved against the page."""
    srcs = re.findall(r'<img\b[^>]*?\bsrc="([^"]+)"', page.read_text(encoding="utf-8"))
    return [(page.parent / s.split("#")[0]).resolve() for s in srcs if not re.match(r"[a-z]+:", s)]


def test_book_from_a_smoke_run(smoke_run):
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_nb")
    from eeutils.notebook.book import build_book

    index = build_book(smoke_run)
    site = index.parent
    assert site == smoke_run / "book" and (site / ".nojekyll").is_file()
    executed = sorted((smoke_run / "notebooks").glob("*.ipynb"))
    assert [p.name for p in executed] == ["01_logit_lens.ipynb", "02_exits.ipynb"]
    home = index.read_text(encoding="utf-8")
    assert 'href="findings.html"' in home
    findings = (site / "findings.html").read_text(encoding="utf-8")
    assert "Findings" in findings
    for nb in executed:
        page = site / "notebooks" / f"{nb.stem}.html"
        assert page.is_file(), f"no page for {nb.name}"
        assert f'href="notebooks/{nb.stem}.html"' in home
        html = page.read_text(encoding="utf-8")
        assert "Traceback" not in html and "google.colab" not in html  # outputs clean, installer cell left out
        images = [f for f in referenced_files(page) if "/_images/" in f.as_posix()]
        figures = list((smoke_run / "figures").glob(f"{nb.name[:2]}_*.png"))
        assert len(images) >= len(figures) > 0, f"{page.name}: {len(images)} output images, {len(figures)} figures"
        missing = [f for f in referenced_files(page) if not f.is_file()]
        assert not missing, f"{page.name} references missing files: {missing}"


def test_book_refuses_a_foreign_folder(smoke_run, tmp_path):
    from eeutils.notebook.book import build_book

    (tmp_path / "keep.txt").write_text("not a book")
    with pytest.raises(FileExistsError, match="not a Sphinx build"):
        build_book(smoke_run, tmp_path)
    with pytest.raises(FileNotFoundError, match="eeutils.series"):
        build_book(tmp_path / "empty", tmp_path / "site")
