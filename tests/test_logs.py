"""doreisa's logging: the level from the command line or the environment, a terminal handler, a copy in a file."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from doreisa import logs
from doreisa.cli import main


@pytest.fixture(autouse=True)
def _restore_the_logger() -> Iterator[None]:
    logger = logging.getLogger("doreisa")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved  # type: ignore[misc]


@pytest.mark.parametrize(
    ("level", "verbose", "env", "expected"),
    [
        (None, 0, None, logging.WARNING),
        (None, 1, None, logging.INFO),
        (None, 2, None, logging.DEBUG),
        ("error", 2, "DEBUG", logging.ERROR),  # the option wins over -v and the environment
        (None, 1, "ERROR", logging.INFO),  # -v wins over the environment
        (None, 0, "debug", logging.DEBUG),
    ],
)
def test_the_level_comes_from_the_option_then_verbose_then_the_environment(
    level: str | None, verbose: int, env: str | None, expected: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    if env is None:
        monkeypatch.delenv(logs.ENV_LEVEL, raising=False)
    else:
        monkeypatch.setenv(logs.ENV_LEVEL, env)
    assert logs.level_of(level, verbose) == expected


def test_a_bad_level_names_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"--log-level: 'loud' is not a log level; use one of DEBUG, INFO, WARNING"):
        logs.level_of("loud")
    monkeypatch.setenv(logs.ENV_LEVEL, "loud")
    with pytest.raises(ValueError, match=r"\$DOREISA_LOG_LEVEL: 'loud' is not a log level"):
        logs.level_of(None)


def test_the_terminal_shows_its_level_and_the_file_gets_info(tmp_path: Path) -> None:
    terminal = io.StringIO()
    logs.configure(logging.WARNING, terminal)
    logs.configure(logging.WARNING, terminal)  # again: one handler, not two
    copy = logs.copy_to(tmp_path / "doreisa.log")
    log = logging.getLogger("doreisa.test")
    log.info("the file only")
    log.warning("both")
    log.debug("neither")
    logs.stop_copy(copy)
    log.info("after the copy: nowhere")
    assert [line.split(" ", 1)[1] for line in terminal.getvalue().splitlines()] == ["WARNING doreisa.test: both"]
    lines = (tmp_path / "doreisa.log").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "INFO    doreisa.test: the file only",
        "WARNING doreisa.test: both",
    ]


def test_the_command_line_refuses_a_bad_level(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--log-level", "loud", "schema"])
    assert exited.value.code == 2
    assert "--log-level: 'loud' is not a log level" in capsys.readouterr().err
