"""``python main.py --help`` / ``layerscope --help``: the CLI's commands and the desktop app's own options."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_lists_the_cli_commands_and_every_app_option(capsys, flag):
    from app.application import build_parser
    from app.launcher import HEADLESS, main

    assert main([flag]) == 0
    out = capsys.readouterr().out
    for command in HEADLESS:
        assert command in out
    app_options = [o for a in build_parser()._actions for o in a.option_strings if o.startswith("--") and o != "--help"]
    assert {"--preset", "--run", "--session", "--step", "--view", "--size", "--compare", "--screenshot",
            "--raise"} <= set(app_options)
    app_part = out[out.index("desktop app"):]
    for option in app_options:
        assert option in app_part, option
