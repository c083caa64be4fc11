"""The applier's pure decisions (diff.py): when live differs from desired, and what a patch removes."""

from decimal import Decimal

import pytest

from tinyimg_operator.applier import object_path
from tinyimg_operator.diff import contains, parse_quantity, removal_patch

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


def resources(**limits):
    return {"spec": {"template": {"spec": {"containers": [{"name": "server", "resources": {"limits": limits}}]}}}}


# What the API server stores for what we send: the same value in canonical form.
NORMALISED = {
    "half-cpu-as-millicores": ("0.5", "500m", True),
    "whole-cpu-as-millicores": ("1", "1000m", True),
    "mebibytes-as-gibibytes": ("1024Mi", "1Gi", True),
    "gibibytes-as-mebibytes": ("1Gi", "1024Mi", True),
    "decimal-megabytes-as-gigabytes": ("1000M", "1G", True),
    "exponent-form": ("1e3", "1k", True),
    "gpu-count-as-number": ("2", 2, True),
    "binary-is-not-decimal": ("1Gi", "1G", False),
    "real-change-of-cpu": ("0.5", "600m", False),
    "real-change-of-memory": ("16Gi", "24Gi", False),
}


@pytest.mark.parametrize("desired,actual,same", NORMALISED.values(), ids=NORMALISED.keys())
def test_quantities_the_api_server_normalises_compare_equal(desired, actual, same):
    assert contains(resources(memory=desired), resources(memory=actual)) is same
    claim = {"spec": {"resources": {"requests": {"storage": desired}}}}
    assert contains(claim, {"spec": {"resources": {"requests": {"storage": actual}}}}) is same


def test_empty_dir_size_limit_is_a_quantity():
    assert contains({"emptyDir": {"sizeLimit": "1024Mi"}}, {"emptyDir": {"sizeLimit": "1Gi"}})


def test_strings_outside_quantity_fields_compare_exactly():
    assert not contains({"metadata": {"annotations": {"x": "0.5"}}}, {"metadata": {"annotations": {"x": "500m"}}})
    assert not contains({"spec": {"replicas": "1"}}, {"spec": {"replicas": "1000m"}})


@pytest.mark.parametrize("text,value", [
    ("500m", Decimal("0.5")), ("1Ki", Decimal(1024)), ("1.5Gi", Decimal(3 * 2**29)), ("2", Decimal(2)),
    ("1e-3", Decimal("0.001")), ("100u", Decimal("0.0001")),
], ids=["milli", "kibi", "fractional-gibi", "plain", "exponent", "micro"])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1Gb", "1.2.3", "Gi", True, None], ids=repr)
def test_parse_quantity_refuses_what_is_not_a_quantity(text):
    assert parse_quantity(text) is None


def test_removal_patch_nulls_keys_dropped_since_last_apply():
    previous = {"spec": {"nodeSelector": {"a": "1"}, "replicas": 1}}
    desired = {"spec": {"replicas": 2}}
    assert removal_patch(previous, desired) == {"spec": {"replicas": 2, "nodeSelector": None}}


def test_object_paths_for_core_apps_and_custom_resources():
    assert object_path("v1", "ConfigMap", "ns", "c") == "/api/v1/namespaces/ns/configmaps/c"
    assert object_path("apps/v1", "Deployment", "ns") == "/apis/apps/v1/namespaces/ns/deployments"
    assert object_path("tinyimg.io/v1alpha1", "ImageModel", "ns", "m") == "/apis/tinyimg.io/v1alpha1/namespaces/ns/imagemodels/m"
