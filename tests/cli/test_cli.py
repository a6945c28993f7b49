"""The `nodenet` command as a user meets it (identity commands and the demo)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from nodenet.cli.main import app
from nodenet.protocol.identity import NodeId
from nodenet.protocol.keyring import ClusterKey

runner = CliRunner()


def test_given_a_fresh_state_dir_when_init_then_key_created_and_id_printed(tmp_path: Path):
    result = runner.invoke(app, ["init", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "created node key" in result.output
    printed = result.output.split("node id ")[1].strip()
    shown = runner.invoke(app, ["id", "--state-dir", str(tmp_path)])
    assert NodeId.from_text(shown.output.strip()).text == printed
    short = runner.invoke(app, ["id", "--short", "--state-dir", str(tmp_path)])
    assert short.output.strip() == printed[:10]
    again = runner.invoke(app, ["init", "--state-dir", str(tmp_path)])
    assert "kept existing" in again.output
    assert printed in again.output


def test_given_an_unsafe_key_when_id_then_exit_1_with_one_line_and_no_traceback(tmp_path: Path):
    runner.invoke(app, ["init", "--state-dir", str(tmp_path)])
    (tmp_path / "node.key").chmod(0o644)
    result = runner.invoke(app, ["id", "--state-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "chmod 600" in result.output
    assert "Traceback" not in result.output


def test_given_no_key_when_id_then_hint_to_init(tmp_path: Path):
    result = runner.invoke(app, ["id", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "nodenet init" in result.output


def test_when_keys_generate_then_a_valid_fresh_cluster_key():
    first = runner.invoke(app, ["keys", "generate"]).output.strip()
    second = runner.invoke(app, ["keys", "generate"]).output.strip()
    assert ClusterKey.from_text(first) != ClusterKey.from_text(second)


def test_when_version_then_prints_it():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("nodenet ")


def test_given_a_usage_error_then_exit_2():
    assert runner.invoke(app, ["no-such-command"]).exit_code == 2


def test_backup_copies_a_state_directory_and_refuses_a_missing_one(tmp_path: Path):
    from nodenet.daemon.state import StateStore

    runner.invoke(
        app, ["init", "--state-dir", str(tmp_path / "node"), "--config", str(tmp_path / "c.toml")]
    )
    StateStore.open(tmp_path / "node" / "state").close()
    result = runner.invoke(
        app, ["backup", str(tmp_path / "copy"), "--state-dir", str(tmp_path / "node")]
    )
    assert result.exit_code == 0, result.output
    assert "backed up 0 entries" in result.output
    assert (tmp_path / "copy" / "BACKUP.json").exists()
    assert (tmp_path / "copy" / "node.key").exists()
    missing = runner.invoke(
        app, ["backup", str(tmp_path / "x"), "--state-dir", str(tmp_path / "none")]
    )
    assert missing.exit_code == 1
    assert "no nodenet state" in missing.output
