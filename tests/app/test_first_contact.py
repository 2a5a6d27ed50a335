"""What a newcomer reads first: the README's Quick start, followed top to bottom."""
from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _quick_start() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Quick start")
    return text[start:text.index("\n## ", start + 1)]


def test_torch_build_choice_comes_before_the_install_command():
    qs = _quick_start()
    install = qs.index("pip install -e . && layerscope")
    cpu = qs.find("pip install torch --index-url https://download.pytorch.org/whl/cpu")
    cuda = qs.find("pip install torch --index-url https://download.pytorch.org/whl/cu")
    assert 0 <= cpu < install, "the CPU-only torch command must come before the install command"
    assert 0 <= cuda < install, "the CUDA torch command must come before the install command"


def test_the_two_setup_commands_are_unchanged():
    qs = _quick_start()
    assert "```\npip install -e . && layerscope\n```" in qs
    assert "```\npip install -e '.[test]' && pytest\n```" in qs
