"""The one hashing helper: content digests and config hashes."""

import hashlib
from dataclasses import dataclass

from care.hashing import config_hash, digest


def test_digest_of_chunks_is_the_digest_of_their_concatenation():
    assert digest("mode:", b"\x00\x01") == hashlib.sha256(b"mode:\x00\x01").hexdigest()
    assert digest("abc", length=12, algorithm="sha1") == hashlib.sha1(b"abc").hexdigest()[:12]


@dataclass
class Knobs:
    k: int = 4
    name: str = "care"


def test_config_hash_reads_dataclasses_as_dicts_and_ignores_key_order():
    assert config_hash(Knobs()) == config_hash({"name": "care", "k": 4})
    assert config_hash(Knobs(k=2)) != config_hash(Knobs())
    assert len(config_hash(Knobs(), length=8)) == 8
