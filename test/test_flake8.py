"""The standard ament_flake8 check (skipped where ament_flake8 is not installed).

The line length follows ruff.toml (120) rather than ament's default of 99.
"""
import pytest

ament_flake8_main = pytest.importorskip('ament_flake8.main')


@pytest.mark.flake8
def test_flake8():
    rc, errors = ament_flake8_main.main_with_errors(argv=['--linelength', '120'])
    assert rc == 0, f'Found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)
