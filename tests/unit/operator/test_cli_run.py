"""`tinyimg-operator run` is namespaced unless told otherwise, like the chart and the image."""

import pytest

from tinyimg_operator.cli import build_kopf_argv, build_parser

KOPF = ["run", "-m", "tinyimg_operator.handlers", "--standalone"]
CASES = {
    "namespace-from-the-pod-env": ([], {"TINYIMG_NAMESPACE": "gpu"}, [*KOPF, "--namespace", "gpu"]),
    "default-namespace-without-env": ([], {}, [*KOPF, "--namespace", "default"]),
    "flag-beats-env": (["--namespace=models"], {"TINYIMG_NAMESPACE": "gpu"}, [*KOPF, "--namespace", "models"]),
    "cluster-wide-by-option": (["--all-namespaces"], {"TINYIMG_NAMESPACE": "gpu"}, [*KOPF, "--all-namespaces"]),
    "chart-arguments": (
        ["--namespace=tinyimg", "--liveness=http://0.0.0.0:8080/healthz", "--debug"], {},
        [*KOPF, "--namespace", "tinyimg", "--liveness", "http://0.0.0.0:8080/healthz", "--debug"],
    ),
}


@pytest.mark.parametrize(("argv", "environ", "expected"), CASES.values(), ids=CASES.keys())
def test_run_builds_the_kopf_command_line(argv, environ, expected):
    assert build_kopf_argv(build_parser().parse_args(["run", *argv]), environ) == expected


def test_run_refuses_a_namespace_and_all_namespaces_together(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--namespace", "a", "--all-namespaces"])
    assert "not allowed with argument" in capsys.readouterr().err
