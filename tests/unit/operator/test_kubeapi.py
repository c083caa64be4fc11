"""The operator's API client: credentials kopf hands over as data live in files only while used."""

import stat

import kopf
import pytest

from tinyimg_operator.kubeapi import ApiError, KubeApi

CA, CERT, KEY = b"-----BEGIN CERTIFICATE-----\nca\n", b"-----BEGIN CERTIFICATE-----\nc\n", b"-----BEGIN KEY-----\nk\n"


def info(**fields) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server="https://127.0.0.1:6443/", **fields)


def test_credential_data_is_written_privately_and_removed_on_relogin_and_close():
    api = KubeApi()
    api.connect(info(ca_data=CA, certificate_data=CERT, private_key_data=KEY))
    first = api.credential_dir
    assert sorted(p.name for p in first.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    assert (first / "key.pem").read_bytes() == KEY
    assert stat.S_IMODE(first.stat().st_mode) == 0o700
    assert stat.S_IMODE((first / "key.pem").stat().st_mode) == 0o600
    api.connect(info(ca_data=CA, private_key_data=KEY, certificate_data=CERT))  # kopf logs in again
    assert not first.exists() and api.credential_dir.exists() and api.credential_dir != first
    second = api.credential_dir
    api.close()
    assert not second.exists() and api.credential_dir is None


def test_paths_and_tokens_write_no_files():
    api = KubeApi()
    api.connect(info(ca_path="/etc/ca.pem", token="t"))
    assert api.credential_dir is None
    api.close()


def test_requests_before_login_fail_as_transient():
    with pytest.raises(ApiError, match="not logged in") as err:
        KubeApi().get("/api/v1/namespaces")
    assert err.value.transient
