"""The applier's pure decisions: when live differs from desired, and what a patch removes."""

import pytest

from tinyimg_operator.applier import contains, object_path, removal_patch

CASES = {
    "server-added-fields-ignored": ({"a": 1}, {"a": 1, "b": 2}, True),
    "changed-scalar": ({"a": 1}, {"a": 2}, False),
    "missing-key": ({"a": {"b": 1}}, {"a": {}}, False),
    "list-items-compared-as-subsets": ([{"n": "x"}], [{"n": "x", "d": 1}], True),
    "list-length-differs": ([{"n": "x"}], [{"n": "x"}, {"n": "y"}], False),
    "type-differs": ({"q": "1"}, {"q": 1}, False),
}


@pytest.mark.parametrize("desired,actual,expected", CASES.values(), ids=CASES.keys())
def test_contains(desired, actual, expected):
    assert contains(desired, actual) is expected


def test_removal_patch_nulls_keys_dropped_since_last_apply():
    previous = {"spec": {"nodeSelector": {"a": "1"}, "replicas": 1}}
    desired = {"spec": {"replicas": 2}}
    assert removal_patch(previous, desired) == {"spec": {"replicas": 2, "nodeSelector": None}}


def test_object_paths_for_core_apps_and_custom_resources():
    assert object_path("v1", "ConfigMap", "ns", "c") == "/api/v1/namespaces/ns/configmaps/c"
    assert object_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert object_path("tinyimg.io/v1alpha1", "ImageModel", "ns", "m") == "/apis/tinyimg.io/v1alpha1/namespaces/ns/imagemodels/m"
