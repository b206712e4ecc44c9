"""The standard ament_copyright check (skipped where ament_copyright is not installed)."""
import pytest

ament_copyright_main = pytest.importorskip('ament_copyright.main')


@pytest.mark.copyright
def test_copyright():
    rc = ament_copyright_main.main(argv=['.', 'test'])
    assert rc == 0, 'Found errors'
