"""The `vpo` command: every subcommand answers --help with its own usage; --version names the code."""

import pytest

from vpo import cli


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_has_its_own_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: vpo {command}") or out.startswith("usage: python -m"), out[:200]
    assert "# Configuration keys" not in out  # config-doc --help is not the doc


def test_version_and_unknown_command(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("vpo 0.")
    with pytest.raises(SystemExit) as done:
        cli.main(["bogus"])
    assert done.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_check_config_names_what_is_wrong(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: -1\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml: key '\(top level\)': 'policy_model' is a required"):
        cli.check_config([str(bad)])
    with pytest.raises(SystemExit, match="not found"):
        cli.check_config([str(tmp_path / "missing.yaml")])
