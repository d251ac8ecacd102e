import stat

from cs_site.secret_key import secret_key_file


def test_key_is_generated_once_private_and_reused(tmp_path):
    path = tmp_path / "sub" / "secret_key"
    first = secret_key_file(path)
    assert len(first) >= 50
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_key_file(path) == first
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_different_installations_get_different_keys(tmp_path):
    assert secret_key_file(tmp_path / "a") != secret_key_file(tmp_path / "b")
