"""The repo stands alone (issue 18 item 6): no tracked file cites documents outside it.

Environment facts the code relies on live in docs/INSTALL.md; comments cite a section there.
BENCHMARKS.md is exempt: its "Setup" lines record the commands as they were run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Built from parts so that this file does not match itself.
OUTSIDE = ("ENVIRONMENT" + ".md", "../" + "shared", "/work/" + "shared")
EXEMPT = {"BENCHMARKS.md"}


def test_no_tracked_file_cites_a_document_outside_the_repo():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    hits = []
    for name in filter(None, files.decode().split("\0")):
        path = ROOT / name
        if name in EXEMPT or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:  # images
            continue
        for n, line in enumerate(text.splitlines(), 1):
            hits += [f"{name}:{n}: {needle}" for needle in OUTSIDE if needle in line]
    assert not hits, "cite docs/INSTALL.md instead:\n" + "\n".join(hits)


def test_install_doc_has_the_sections_the_code_cites():
    doc = (ROOT / "docs" / "INSTALL.md").read_text()
    for section in ("Torch first, pinned", "torchvision, torchaudio, torchcodec", "KV cache on CPU",
                    "Weight sync without insecure serialization", "bf16 on CPU",
                    "The tiny policy is big enough", "Public data"):
        assert f"## {section}\n" in doc, section
