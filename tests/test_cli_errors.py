"""The CLI's last line of defence: every failure is one line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

from click.testing import CliRunner

from himari.cli.main import cli


def test_missing_optional_dependency_names_the_extra():
    import click

    @click.command("needs-ray")
    def needs_ray() -> None:
        raise ModuleNotFoundError("No module named 'ray'", name="ray")

    cli.add_command(needs_ray)
    try:
        res = CliRunner().invoke(cli, ["needs-ray"])
    finally:
        cli.commands.pop("needs-ray")
    assert res.exit_code == 2
    assert "Traceback" not in res.output
    assert "pip install 'himari[dist]'" in res.output


def test_unknown_data_file_is_one_line_error(tmp_path):
    res = CliRunner().invoke(cli, ["data", "info", str(tmp_path / "missing.csv")])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and "file not found" in res.output


def test_missing_exchange_and_store_extras_are_named():
    import click

    for module, extra in (("ccxt", "exchange"), ("duckdb", "store")):
        @click.command("needs-extra")
        def needs_extra(module: str = module) -> None:
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)

        cli.add_command(needs_extra)
        try:
            res = CliRunner().invoke(cli, ["needs-extra"])
        finally:
            cli.commands.pop("needs-extra")
        assert res.exit_code == 2 and f"pip install 'himari[{extra}]'" in res.output
