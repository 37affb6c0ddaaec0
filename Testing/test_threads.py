"""--threads on every command of both command lines; the default follows the idle cores."""
import pytest

from FewShotSegLib import cli as fs_cli
from InteractiveRefineLib import cli as ir_cli
from InteractiveRefineLib.core import threads


def _commands(parser):
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices


@pytest.mark.parametrize("build", [ir_cli.build_parser, fs_cli.build_parser])
def test_every_command_takes_threads(build):
    parser = build()
    for name, sp in _commands(parser).items():
        assert "--threads" in sp._option_string_actions, name
    if build is fs_cli.build_parser:  # before or after the command
        assert fs_cli.build_parser().parse_args(["--threads", "3", "demo"]).threads == 3
        assert fs_cli.build_parser().parse_args(["demo", "--threads", "2"]).threads == 2


@pytest.mark.parametrize("cores,load,expected", [(2, 1.2, 1), (2, 0.1, 2), (2, 5.0, 1), (16, 0.0, 4), (8, 6.4, 2)])
def test_default_threads_are_the_idle_cores(monkeypatch, cores, load, expected):
    monkeypatch.setattr(threads.os, "cpu_count", lambda: cores)
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (load, load, load))
    assert threads.default_threads() == expected


@pytest.mark.parametrize("tool,argv", [(ir_cli, ["demo", "--threads", "3", "--out", "{f}"]),
                                       (fs_cli, ["--threads", "3", "demo", "--out", "{f}"]),
                                       (fs_cli, ["demo", "--out", "{f}"])])
def test_the_command_uses_the_threads_it_was_given(tool, argv, tmp_path, monkeypatch):
    """--threads reaches torch before the command runs (0, the default, when not given); the command here
    then stops at its bad --out (an existing file), so nothing is computed."""
    (tmp_path / "afile").write_text("x")
    used = []
    monkeypatch.setattr(tool, "set_threads", used.append)
    assert tool.main([a.format(f=tmp_path / "afile") for a in argv]) == 2
    assert used == [3 if "3" in argv else 0]
