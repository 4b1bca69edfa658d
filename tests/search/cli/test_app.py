"""The `pressroom` app itself: its version and shell completion."""

from __future__ import annotations

from importlib.metadata import version


def test_version_prints_the_installed_package_version(run_cli):
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"pressroom {version('pressroom')}"


def test_shell_completion_is_offered_and_completes_command_names(run_cli):
    # typer detects the shell unless told not to; then --show-completion takes the shell's name
    shown = run_cli("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert shown.returncode == 0, shown.stderr
    assert "complete -o default -F _pressroom_completion pressroom" in shown.stdout
    assert "_PRESSROOM_COMPLETE=complete_bash" in shown.stdout
    # what the installed script asks the program when the user presses TAB after "pressroom com"
    env = {"_PRESSROOM_COMPLETE": "complete_bash", "COMP_WORDS": "pressroom com", "COMP_CWORD": "1"}
    completed = run_cli(env=env)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.split() == ["compare"]
    helped = run_cli("--help")
    assert "--install-completion" in helped.stdout and "--version" in helped.stdout
