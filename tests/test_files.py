"""Files: the sample clip, hashing."""

import hashlib

from avemo.files import sample_video, sha256_file


def test_sample_video_is_the_installed_carphone_clip(carphone):
    assert sample_video() == carphone
    assert sample_video().stat().st_size > 100_000


def test_sha256_file(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"avemo" * 1000)
    assert sha256_file(path, chunk=7) == hashlib.sha256(b"avemo" * 1000).hexdigest()
