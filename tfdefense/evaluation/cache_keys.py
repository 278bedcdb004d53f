"""Cache keys of the run folder: a JSON config's hash and the fingerprints of what a result depends on."""

import hashlib
import json


def config_hash(config):
    """16 hex digits of the SHA-256 of `config` as sorted JSON (the HASH of models/NAME-HASH.keras and
    steps/NAME-HASH.json)."""
    text = json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_dependencies(config, depends_on=()):
    """`config` plus the fingerprints of the models / arrays in `depends_on` (unchanged when empty)."""
    from tfdefense.attacks.generation import array_digest, model_fingerprint

    if not depends_on:
        return config
    fingerprints = [model_fingerprint(item) if hasattr(item, "weights") else array_digest(item) for item in depends_on]
    return {**config, "depends_on": fingerprints}
