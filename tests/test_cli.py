"""The thin `lucie` CLI: recipe switching and the audit command."""
from __future__ import annotations

import shutil

from typer.testing import CliRunner

from lucie.cli import app
from repo_copy import PROJECT

runner = CliRunner()


def test_recipe_switch_copies_a_validated_recipe(tmp_path):
    shutil.copytree(PROJECT / "recipes", tmp_path / "recipes")
    res = runner.invoke(app, ["recipe", "lucie-7b", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "params.yaml").read_bytes() == (PROJECT / "recipes/lucie-7b.yaml").read_bytes()
    res = runner.invoke(app, ["recipe", "nope", "--root", str(tmp_path)])
    assert res.exit_code != 0 and "lucie-7b" in res.output and "tiny" in res.output


def test_tiny_recipe_is_the_default_params():
    assert (PROJECT / "params.yaml").read_bytes() == (PROJECT / "recipes/tiny.yaml").read_bytes()


def test_audit_refuses_a_directory_that_is_not_a_release(tmp_path):
    res = runner.invoke(app, ["audit", str(tmp_path)])
    assert res.exit_code != 0 and "not a release directory" in res.output
