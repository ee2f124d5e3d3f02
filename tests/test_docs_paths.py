"""Every document the code, the config and the docs cite exists in the repository, and every
"docs/method.md §N" names a section that is there: nothing points outside the checkout."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("care", "analysis", "benchmarks", "experiments", "scripts", "tests", "conf", "docs", "hydra_plugins")
SUFFIXES = {".py", ".yaml", ".md", ".sh"}
DOC_PATH = re.compile(r"(?<![\w/.-])((?:\.\./)*[\w-]+(?:/[\w.-]+)*/[\w.-]+\.md)\b")
SECTION = re.compile(r"docs/method\.md`?((?:[\s,]+(?:and\s+)?§[\d-]+(?:-§\d+)?)+)")


def cited_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "run.py"]
    for folder in SCANNED:
        files += [p for p in (ROOT / folder).rglob("*") if p.suffix in SUFFIXES and "fixtures" not in p.parts
                  and "__pycache__" not in p.parts]
    return files


def test_every_cited_document_exists():
    missing = []
    for file in cited_files():
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            for cited in DOC_PATH.findall(line):
                if "://" in line or cited.startswith(("multirun/", "outputs/", "paper_figures/tables/")):  # analysis output
                    continue
                if not (ROOT / cited).is_file() and not (file.parent / cited).is_file():
                    missing.append(f"{file.relative_to(ROOT)}:{number}: {cited}")
    assert not missing, "cited documents that are not in the repository:\n" + "\n".join(missing)


def test_nothing_points_outside_the_checkout_or_at_an_unnamed_spec():
    offending = []
    for file in cited_files():
        if file == Path(__file__):
            continue
        for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
            if re.search(r"\.\./shared|\bspec sections?\b|care_method\.md|paper_recipe\.md", line):
                offending.append(f"{file.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offending, "\n".join(offending)


def test_every_cited_method_section_exists():
    headings = set(re.findall(r"^## §(\d+)", (ROOT / "docs" / "method.md").read_text(), re.MULTILINE))
    assert headings >= {str(n) for n in range(11)}
    cited = set()
    for file in cited_files():
        for match in SECTION.finditer(file.read_text(encoding="utf-8")):
            for first, last in re.findall(r"§(\d+)(?:-§(\d+))?", match.group(1)):
                cited.update(str(n) for n in range(int(first), int(last or first) + 1))
    assert cited, "no code cites docs/method.md by section"
    assert cited <= headings, f"sections cited but missing from docs/method.md: {sorted(cited - headings)}"
