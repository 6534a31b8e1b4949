"""The slurmrestd client against a real slurmrestd: authentication and error reporting."""

import pytest

from hpc.slurm_rest import SlurmRestClient, SlurmRestError, _megabytes, _minutes

pytestmark = pytest.mark.slurm


def test_ping_with_the_token_file(slurmrestd):
    client = SlurmRestClient(slurmrestd["rest_url"], slurmrestd["rest_user"],
                             token_file=slurmrestd["rest_token_file"])
    assert client.ping()["meta"]["Slurm"]["release"]


def test_bad_token_is_refused_without_echoing_it(slurmrestd, tmp_path, monkeypatch):
    secret = "eyJhbGciOiJIUzI1NiJ9.eyJzdW4iOiJyb290In0.not-a-signature"
    monkeypatch.setenv("SLURM_JWT", secret)
    client = SlurmRestClient(slurmrestd["rest_url"], "root")
    with pytest.raises(SlurmRestError) as info:
        client.ping()
    assert secret not in str(info.value) and "slurmrestd" in str(info.value)
    monkeypatch.delenv("SLURM_JWT")
    with pytest.raises(SlurmRestError, match="no Slurm JWT"):
        client.ping()


def test_unreachable_and_unknown_job(slurmrestd):
    client = SlurmRestClient(slurmrestd["rest_url"], slurmrestd["rest_user"],
                             token_file=slurmrestd["rest_token_file"])
    assert client.states("999999") == []
    with pytest.raises(SlurmRestError, match="cannot reach"):
        SlurmRestClient("http://127.0.0.1:9", "root",
                        token_file=slurmrestd["rest_token_file"]).ping()


@pytest.mark.parametrize("text,minutes", [("10", 10), ("00:10:00", 10), ("1:00:01", 61),
                                          ("2-00:00:00", 2880), (None, None)])
def test_minutes(text, minutes):
    assert _minutes(text) == minutes


@pytest.mark.parametrize("text,mb", [("512M", 512), ("4G", 4096), ("100", 100), (None, None)])
def test_megabytes(text, mb):
    assert _megabytes(text) == mb
