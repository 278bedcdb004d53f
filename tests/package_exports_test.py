"""One public path per name: each public object is exported by one subpackage (plus `tfdefense.defenses`'s
documented re-exports of the defenses' builders and training tools)."""

import importlib

import pytest

PUBLIC_PACKAGES = (
    "tfdefense.data",
    "tfdefense.models",
    "tfdefense.training",
    "tfdefense.attacks",
    "tfdefense.defenses.purifiers",
    "tfdefense.defenses.transforms",
    "tfdefense.defenses.trainers",
    "tfdefense.defenses.detectors",
    "tfdefense.export",
    "tfdefense.evaluation",
)
ROLES = ("purifiers", "transforms", "trainers", "detectors")


def _exports(package):
    module = importlib.import_module(package)
    return {name: getattr(module, name) for name in module.__all__}


@pytest.mark.parametrize("role", ROLES)
def test_a_role_package_exports_only_its_own_classes_and_functions(role):
    package = f"tfdefense.defenses.{role}"
    foreign = {
        name: obj.__module__
        for name, obj in _exports(package).items()
        if not getattr(obj, "__module__", "").startswith(package + ".")
    }
    assert not foreign, f"{package} re-exports names defined elsewhere: {foreign}"


def test_no_object_is_exported_by_two_public_packages():
    owners = {}
    for package in PUBLIC_PACKAGES:
        for name, obj in _exports(package).items():
            if callable(obj):
                owners.setdefault(id(obj), []).append(f"{package}.{name}")
    twice = [paths for paths in owners.values() if len(paths) > 1]
    assert not twice, f"exported under more than one public path: {twice}"


def test_defenses_reexports_every_role_name_and_the_documented_builders():
    import tfdefense.defenses as defenses

    for role in ROLES:
        for name, obj in _exports(f"tfdefense.defenses.{role}").items():
            assert getattr(defenses, name) is obj and name in defenses.__all__
    import tfdefense.models as models
    import tfdefense.training as training

    assert defenses.dncnn_network is models.dncnn_network and defenses.FusedAdam is training.FusedAdam
    assert all(hasattr(defenses, name) for name in defenses.__all__)


def test_predict_labels_has_one_public_path():
    import tfdefense.evaluation
    import tfdefense.inference

    assert callable(tfdefense.inference.predict_labels)
    assert not hasattr(tfdefense.evaluation, "predict_labels")
