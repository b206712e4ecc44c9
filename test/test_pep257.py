"""The standard ament_pep257 check (skipped where ament_pep257 is not installed).

D213 is ignored: this package starts multi-line docstrings on the first line (D212 style).
"""
import pytest

ament_pep257_main = pytest.importorskip('ament_pep257.main')


@pytest.mark.pep257
def test_pep257():
    rc = ament_pep257_main.main(argv=['.', 'test', '--add-ignore', 'D213'])
    assert rc == 0, 'Found code style errors / warnings'
