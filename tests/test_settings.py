"""Settings: declared once, read from defaults < TOML file < ASSISTANTD_* env < flags, and documented."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from assistantd.cli import main
from assistantd.settings import SETTINGS, Setting, Settings, load_settings

README = Path(__file__).resolve().parent.parent / "README.md"

SAMPLES: dict[type, tuple[str, Any]] = {
    str: ("from-env", "from-env"),  # settings with choices use their first non-default choice instead
    int: ("4242", 4242),
    float: ("2.5", 2.5),
    bool: ("true", True),
}


def test_every_setting_has_a_settings_field_with_the_same_default() -> None:
    by_field = {f.name: f for f in fields(Settings)}
    defaults = load_settings(environ={})
    for s in SETTINGS:
        assert s.name in by_field, s.name
        assert by_field[s.name].default == s.default, s.name
        assert getattr(defaults, s.name) == s.default, s.name
        assert isinstance(getattr(defaults, s.name), s.type), s.name
        assert s.help.strip(), s.name
    assert defaults.extra == {}


def test_env_and_flag_names() -> None:
    s = Setting("max_body_bytes", int, 1, "x")
    assert s.env == "ASSISTANTD_MAX_BODY_BYTES"
    assert s.flag == "--max-body-bytes"
    assert len({x.env for x in SETTINGS}) == len(SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_each_env_var_overrides_its_default(setting: Setting) -> None:
    raw, value = SAMPLES[setting.type]
    if setting.choices:
        raw = value = next(c for c in setting.choices if c != setting.default)
    loaded = load_settings(environ={setting.env: raw})
    assert getattr(loaded, setting.name) == value
    others = [s for s in SETTINGS if s is not setting]
    assert all(getattr(loaded, s.name) == s.default for s in others)


def test_choices_are_case_insensitive() -> None:
    assert load_settings(environ={"ASSISTANTD_LOG_LEVEL": "WARNING"}).log_level == "warning"
    assert load_settings(overrides={"log_level": "Debug"}, environ={}).log_level == "debug"


def test_env_values_are_trimmed_and_unrelated_env_is_ignored() -> None:
    loaded = load_settings(environ={"ASSISTANTD_PORT": " 9000 ", "ASSISTANTD_NOT_A_SETTING": "x", "PORT": "1"})
    assert loaded.port == 9000
    assert loaded.extra == {}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        ("on", True),
        ("0", False),
        ("false", False),
        ("No", False),
        ("off", False),
        ("", False),
    ],
)
def test_booleans_accept_the_usual_spellings(raw: str, value: bool) -> None:
    assert load_settings(environ={"ASSISTANTD_ACCESS_LOG": raw}).access_log is value


@pytest.mark.parametrize(
    ("env", "raw", "message"),
    [
        ("ASSISTANTD_PORT", "eighty", "ASSISTANTD_PORT: expected an integer, got 'eighty'"),
        ("ASSISTANTD_MAX_BODY_BYTES", "1.5", "ASSISTANTD_MAX_BODY_BYTES: expected an integer, got '1.5'"),
        ("ASSISTANTD_ALLOW_NO_AUTH", "maybe", "ASSISTANTD_ALLOW_NO_AUTH: expected true or false, got 'maybe'"),
        ("ASSISTANTD_UPSTREAM_TIMEOUT", "soon", "ASSISTANTD_UPSTREAM_TIMEOUT: expected a number, got 'soon'"),
        (
            "ASSISTANTD_LOG_LEVEL",
            "verbose",
            "ASSISTANTD_LOG_LEVEL: expected one of debug, info, warning, error, got 'verbose'",
        ),
    ],
)
def test_bad_env_values_name_the_variable_and_the_value(env: str, raw: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        load_settings(environ={env: raw})
    assert str(info.value) == message


def test_precedence_file_then_env_then_overrides(tmp_path: Path) -> None:
    config = tmp_path / "assistantd.toml"
    config.write_text('port = 1111\nhost = "0.0.0.0"\nlog_level = "debug"\naccess_log = true\n')
    env = {"ASSISTANTD_PORT": "2222", "ASSISTANTD_HOST": "10.0.0.1"}
    loaded = load_settings(overrides={"port": 3333, "data_dir": None}, environ=env, config_file=str(config))
    assert loaded.port == 3333  # flag beats env
    assert loaded.host == "10.0.0.1"  # env beats file
    assert loaded.log_level == "debug" and loaded.access_log is True  # file beats default
    assert loaded.data_dir == "./data"  # an unset flag (None) changes nothing


def test_config_file_from_env_and_known_sections_ride_along(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        'max_upload_bytes = 10\n\n[aliases]\n"gpt-4o" = "llama"\n\n'
        '[[upstreams]]\nname = "local"\nbase_url = "http://x/v1"\nmodels = ["llama*"]\n'
    )
    loaded = load_settings(environ={"ASSISTANTD_CONFIG": str(config)})
    assert loaded.max_upload_bytes == 10
    assert loaded.extra == {
        "aliases": {"gpt-4o": "llama"},
        "upstreams": [{"name": "local", "base_url": "http://x/v1", "models": ["llama*"]}],
    }


def test_settings_are_declared_once_in_the_settings_dataclass() -> None:
    source = (Path(__file__).resolve().parent.parent / "assistantd" / "settings.py").read_text()
    for s in SETTINGS:
        # One declaration per setting: its name appears once as a field, and nowhere as a Setting(...) call.
        assert len(re.findall(rf"^\s+{s.name}\b\s*:", source, re.MULTILINE)) == 1, s.name
        assert f'Setting("{s.name}"' not in source, s.name


@pytest.mark.parametrize(
    ("text", "line", "key", "near"),
    [
        ('port = 1\nlog-level = "debug"\n', 2, "log-level", "log_level"),
        ('\n\n[[upstream]]\nbase_url = "http://x/v1"\n', 3, "upstream", "upstreams"),
        ('[[upstreams]]\nbase_url = "http://x/v1"\nmodel = ["a*"]\n', 3, "model", "models"),
        ('acces_log = true\n', 1, "acces_log", "access_log"),
        ('[server]\nport = 1\n', 1, "server", None),
    ],
)
def test_unknown_config_keys_name_the_file_line_and_nearest_key(
    tmp_path: Path, text: str, line: int, key: str, near: str | None
) -> None:
    config = tmp_path / "typo.toml"
    config.write_text(text)
    with pytest.raises(ValueError) as info:
        load_settings(environ={}, config_file=str(config))
    message = str(info.value)
    assert message.startswith(f"{config}:{line}: unknown "), message
    assert repr(key) in message
    if near:
        assert message.endswith(f"did you mean {near!r}?"), message
    else:
        assert "did you mean" not in message


def test_a_broken_toml_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "broken.toml"
    config.write_text('port = 1\nhost = "unterminated\n')
    with pytest.raises(ValueError, match=re.escape(f"{config}: not valid TOML: ") + ".*line 2"):
        load_settings(environ={}, config_file=str(config))
    assert main(["serve", "--config", str(config)]) == 2
    assert f"assistantd: {config}: not valid TOML" in capsys.readouterr().err


def test_a_section_written_as_a_plain_table_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "t.toml"
    config.write_text('[upstreams]\nbase_url = "http://x/v1"\n')
    expected = f"{config}:1: upstreams must be an array of tables, written [[upstreams]]"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_settings(environ={}, config_file=str(config))


def test_bad_config_values_name_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('port = "http"\n')
    with pytest.raises(ValueError, match=re.escape(f"{config}: port: expected an integer, got 'http'")):
        load_settings(environ={}, config_file=str(config))


def test_missing_config_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        load_settings(environ={}, config_file=str(tmp_path / "nope.toml"))


def test_cli_reports_a_bad_log_level_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--log-level", "verbose", "--port", "1"]) == 2
    assert "--log-level: expected one of debug, info, warning, error, got 'verbose'" in capsys.readouterr().err


def test_cli_reports_bad_settings_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('db_pool_size = "lots"\n')
    assert main(["migrate", "--config", str(config), "--data-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "db_pool_size: expected an integer, got 'lots'" in err
    assert not (tmp_path / "d").exists()


def test_serve_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["serve", "--help"])
    assert info.value.code == 0
    out = re.sub(r"\s+", " ", capsys.readouterr().out)
    for s in SETTINGS:
        assert s.flag in out, s.flag
        assert s.env in out, s.env


def test_static_keys_and_database_url(tmp_path: Path) -> None:
    loaded = load_settings(overrides={"api_keys": " k1:acme , k2 ,, k3:  ", "data_dir": str(tmp_path)}, environ={})
    assert loaded.static_keys == {"k1": "acme", "k2": "default", "k3": "default"}
    assert loaded.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'assistantd.db'}"
    pg = load_settings(overrides={"database_url": "postgresql://u@h/db"}, environ={})
    assert pg.resolved_database_url == "postgresql://u@h/db"


# --- the README documents every setting ----------------------------------------------------------


def _readme_default(setting: Setting) -> str:
    """How the README's settings table spells a default."""
    value = setting.default
    if value == "":
        return "empty"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env)
def test_readme_documents_every_setting(setting: Setting) -> None:
    text = README.read_text(encoding="utf-8")
    assert setting.env in text, f"{setting.env} is not in README.md"
    rows = [line for line in text.splitlines() if line.startswith("|") and f"`{setting.env}`" in line]
    assert len(rows) == 1, f"README.md needs one settings-table row for {setting.env}"
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[0] == f"`{setting.toml_key}`", rows[0]
    assert cells[1] == f"`{setting.env}`", rows[0]
    assert cells[2] == f"`{setting.flag}`", rows[0]
    assert cells[3] == f"`{_readme_default(setting)}`" or cells[3] == _readme_default(setting), rows[0]
    assert cells[4], rows[0]


def test_readme_settings_table_has_no_stale_rows() -> None:
    text = README.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `[a-z_0-9]+` \| `(ASSISTANTD_[A-Z_0-9]+)` \|", text, re.MULTILINE))
    assert documented == {s.env for s in SETTINGS}
