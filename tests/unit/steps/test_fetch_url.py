"""audio_url without I/O: the fetch URL policy (shared/core/netsafety.py), the download's hop-by-hop checks,
address pinning and status handling over httpx's MockTransport (shared/steps/fetch.py), the request
schema, the workflow's FETCH node, and the query kept out of answers."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from functions.api.routes.jobs import shown_options
from functions.api.schemas import CreateJobRequest
from shared.core.config import Settings
from shared.core.errors import PermanentError, TransientError
from shared.core.netsafety import UnsafeFetchUrl, check_fetch_url
from shared.domain.workflow import Event, JobState, StepState, next_decision
from shared.steps.fetch import MAX_REDIRECTS, download, filename_from_url, url_host

PUBLIC = "93.184.215.14"
OTHER_PUBLIC = "8.8.4.4"
SAS = "sv=2025-01-05&sr=b&sp=r&sig=c2VjcmV0LXNpZ25hdHVyZQ%3D%3D"


def resolver(table: dict[str, str]) -> Callable[[str, int], list[str]]:
    def resolve(host: str, _port: int) -> list[str]:
        return [table[host]]

    return resolve


@pytest.fixture
def settings() -> Settings:
    return Settings(max_upload_bytes=1000)


# --- the policy ---------------------------------------------------------------------------------


def test_https_to_a_public_host_passes_with_its_addresses(settings: Settings) -> None:
    url = f"https://media.example.com/a.wav?{SAS}"
    assert check_fetch_url(url, settings, resolver=resolver({"media.example.com": PUBLIC})) == [PUBLIC]


@pytest.mark.parametrize(
    ("url", "address", "message"),
    [
        ("https://media.example.com/a.wav", "127.0.0.1", "loopback"),
        ("https://media.example.com/a.wav", "10.1.2.3", "private"),
        ("https://media.example.com/a.wav", "169.254.169.254", "metadata"),
        ("https://media.example.com/a.wav", "fd00:ec2::254", "metadata"),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254", "metadata"),
        ("http://media.example.com/a.wav", PUBLIC, "must use https"),
        ("ftp://media.example.com/a.wav", PUBLIC, "absolute http(s) URL"),
        ("https://user:pw@media.example.com/a.wav", PUBLIC, "credentials"),
        ("https://media.example.com:99999/a.wav", PUBLIC, "invalid port"),
        ("https://[::1/a.wav", PUBLIC, "not a valid URL"),
    ],
)
def test_unsafe_urls_are_refused_with_the_reason(settings: Settings, url: str, address: str, message: str) -> None:
    with pytest.raises(UnsafeFetchUrl, match=message.replace("(", r"\(").replace(")", r"\)")) as refused:
        check_fetch_url(url, settings, resolver=lambda _host, _port: [address])
    assert str(refused.value).startswith("audio_url")


def test_refusals_never_repeat_the_query(settings: Settings) -> None:
    with pytest.raises(UnsafeFetchUrl) as refused:
        check_fetch_url(f"https://media.example.com/a.wav?{SAS}", settings, resolver=lambda _h, _p: ["10.0.0.1"])
    assert "sig" not in str(refused.value) and "media.example.com" in str(refused.value)


def test_fetch_allowed_hosts_admit_plain_http_on_loopback_and_nothing_else() -> None:
    settings = Settings(FETCH_ALLOWED_HOSTS="127.0.0.1, .Azurite.Test")
    assert settings.fetch_allowed_hosts == ["127.0.0.1", ".azurite.test"]
    never = resolver({})  # allow-listed hosts are not resolved: a KeyError here would fail the test
    assert check_fetch_url("http://127.0.0.1:10000/devstoreaccount1/a.wav", settings, resolver=never) == []
    assert check_fetch_url("http://blob.azurite.test/a.wav", settings, resolver=never) == []
    with pytest.raises(UnsafeFetchUrl, match="loopback"):
        check_fetch_url("https://localhost/a.wav", settings, resolver=lambda _h, _p: ["127.0.0.1"])


def test_callback_allowed_hosts_do_not_admit_audio_urls() -> None:
    settings = Settings(CALLBACK_ALLOWED_HOSTS="127.0.0.1")
    with pytest.raises(UnsafeFetchUrl, match="https"):
        check_fetch_url("http://127.0.0.1/a.wav", settings)


def test_names_come_from_the_path_and_hosts_are_all_that_is_said() -> None:
    assert filename_from_url(f"https://acct.blob.core.windows.net/in/call%2001.mp3?{SAS}") == "call 01.mp3"
    assert filename_from_url("https://media.example.com/") == "audio"
    assert url_host(f"https://Acct.blob.core.windows.net./in/a.wav?{SAS}") == "acct.blob.core.windows.net"
    assert url_host("https://[::1") == "?"


# --- the download, over a mock transport ---------------------------------------------------------


Handler = Callable[[httpx.Request], httpx.Response]


def run(
    settings: Settings, tmp_path: Path, handler: Handler, url: str, table: dict[str, str] | None = None
) -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    found = download(
        url,
        tmp_path / "audio.wav",
        settings=settings,
        resolver=resolver(table or {"media.example.com": PUBLIC}),
        transport=httpx.MockTransport(record),
    )
    return found, seen


def test_the_connection_goes_to_the_checked_address_under_the_host_name(settings: Settings, tmp_path: Path) -> None:
    found, (request,) = run(
        settings,
        tmp_path,
        lambda _r: httpx.Response(200, content=b"RIFF....", headers={"content-type": "audio/wav"}),
        f"https://media.example.com/a.wav?{SAS}",
    )
    assert request.url.host == PUBLIC  # pinned: no second DNS answer can redirect the connection
    assert request.url.query.decode() == SAS
    assert request.headers["host"] == "media.example.com"
    assert request.extensions["sni_hostname"] == "media.example.com"  # the certificate is checked for the name
    assert request.headers["accept-encoding"] == "identity"
    assert (found.host, found.size_bytes, found.content_type, found.redirects) == (
        "media.example.com",
        8,
        "audio/wav",
        0,
    )
    assert (tmp_path / "audio.wav").read_bytes() == b"RIFF...."


def test_every_redirect_hop_is_resolved_checked_and_pinned_again(settings: Settings, tmp_path: Path) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.headers["host"] == "media.example.com":
            return httpx.Response(302, headers={"location": "https://cdn.example.net/b.wav"})
        return httpx.Response(200, content=b"data")

    table = {"media.example.com": PUBLIC, "cdn.example.net": OTHER_PUBLIC}
    found, requests = run(settings, tmp_path, answer, "https://media.example.com/a.wav", table)
    assert [(r.url.host, r.headers["host"]) for r in requests] == [
        (PUBLIC, "media.example.com"),
        (OTHER_PUBLIC, "cdn.example.net"),
    ]
    assert found.redirects == 1


@pytest.mark.parametrize(
    ("location", "table", "message"),
    [
        ("http://169.254.169.254/latest/meta-data/", {}, "must use https"),
        ("https://169.254.169.254/latest/meta-data/", {"169.254.169.254": "169.254.169.254"}, "metadata"),
        ("https://internal.example.com/x", {"internal.example.com": "10.0.0.5"}, "private"),
        ("https://rebound.example.com/x", {"rebound.example.com": "127.0.0.1"}, "loopback"),
    ],
)
def test_a_redirect_to_an_internal_address_is_refused_without_a_request(
    settings: Settings, tmp_path: Path, location: str, table: dict[str, str], message: str
) -> None:
    with pytest.raises(PermanentError, match=f"a redirect from media.example.com was refused.*{message}"):
        run(
            settings,
            tmp_path,
            lambda _r: httpx.Response(301, headers={"location": location}),
            "https://media.example.com/a.wav",
            {"media.example.com": PUBLIC, **table},
        )


def test_at_most_five_redirects(settings: Settings, tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def loop(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(302, headers={"location": "/again"})

    with pytest.raises(PermanentError, match="redirected more than 5 times"):
        run(settings, tmp_path, loop, "https://media.example.com/a.wav")
    assert len(seen) == MAX_REDIRECTS + 1


@pytest.mark.parametrize(
    ("status", "error", "message"),
    [
        (404, PermanentError, "no audio at that URL"),
        (410, PermanentError, "no audio at that URL"),
        (403, PermanentError, "refused access"),
        (401, PermanentError, "refused access"),
        (400, PermanentError, "instead of the audio"),
        (206, PermanentError, "instead of the audio"),
        (500, TransientError, "500"),
        (503, TransientError, "503"),
        (429, TransientError, "429"),
        (408, TransientError, "408"),
    ],
)
def test_statuses_are_permanent_or_transient(
    settings: Settings, tmp_path: Path, status: int, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        run(settings, tmp_path, lambda _r: httpx.Response(status), f"https://media.example.com/a.wav?{SAS}")
    assert type(raised.value) is error
    assert "sig=" not in str(raised.value) and "media.example.com" in str(raised.value)


def test_a_declared_size_over_the_limit_is_refused_before_reading(settings: Settings, tmp_path: Path) -> None:
    def huge(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-length": "5000"}, content=b"x" * 5000)

    with pytest.raises(PermanentError, match="larger than the maximum of 1000 bytes"):
        run(settings, tmp_path, huge, "https://media.example.com/a.wav")


def test_an_undeclared_size_over_the_limit_is_cut_off(settings: Settings, tmp_path: Path) -> None:
    def streamed(_request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter([b"x" * 600, b"x" * 600, b"x" * 600]))

    with pytest.raises(PermanentError, match="larger than the maximum"):
        run(settings, tmp_path, streamed, "https://media.example.com/a.wav")
    assert (tmp_path / "audio.wav").stat().st_size <= 1000


@pytest.mark.parametrize(
    ("failure", "message"),
    [
        (httpx.ConnectTimeout("timed out"), "did not answer in time"),
        (httpx.ReadTimeout("timed out"), "did not answer in time"),
        (httpx.ConnectError("connection refused"), "could not fetch the audio from media.example.com"),
        (httpx.RemoteProtocolError("peer closed connection"), "could not fetch the audio"),
    ],
)
def test_network_failures_are_transient(
    settings: Settings, tmp_path: Path, failure: httpx.HTTPError, message: str
) -> None:
    def broken(_request: httpx.Request) -> httpx.Response:
        raise failure

    with pytest.raises(TransientError, match=message):
        run(settings, tmp_path, broken, "https://media.example.com/a.wav")


def test_an_unresolvable_host_is_permanent(settings: Settings, tmp_path: Path) -> None:
    def nowhere(_host: str, _port: int) -> list[str]:
        raise OSError("Name or service not known")

    with pytest.raises(PermanentError, match="cannot be resolved"):
        download("https://nowhere.example/a.wav", tmp_path / "a", settings=settings, resolver=nowhere)


# --- the request, the workflow, the answer -------------------------------------------------------


def test_audio_url_alone_makes_an_audio_job() -> None:
    request = CreateJobRequest.model_validate({"workflow_type": "lid_only", "audio_url": "https://a.example/x.wav"})
    assert request.options().stored() == {"audio_url": "https://a.example/x.wav"}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"workflow_type": "lid_only"}, "audio_filename (to upload) or audio_url"),
        (
            {
                "workflow_type": "translate_only",
                "source_language": "fra",
                "audio_filename": "t.txt",
                "audio_url": "https://a.example/x.wav",
            },
            "audio_url only apply to audio workflows",
        ),
        ({"workflow_type": "lid_only", "audio_url": "/relative/x.wav"}, "absolute http(s) URL"),
        ({"workflow_type": "lid_only", "audio_url": ""}, "at least 1 character"),
    ],
)
def test_bad_audio_url_requests_are_refused(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CreateJobRequest.model_validate(body)


@pytest.mark.parametrize("workflow", ["full_pipeline", "transcribe_only", "lid_only"])
def test_fetch_comes_first_only_for_jobs_with_an_audio_url(workflow: str) -> None:
    def decide(options: Mapping[str, object], steps: dict[str, StepState]) -> Any:
        job = JobState(workflow_type=workflow, status="processing", source_language="fra", options=options)
        return next_decision(job=job, steps=steps, event=Event("job_started"), max_retries=3, backoff_seconds=1.0)

    fetched = {"audio_url": "https://a.example/x.wav"}
    assert [d.step_type for d in decide(fetched, {}).dispatches] == ["FETCH"]
    assert decide(fetched, {"FETCH": StepState("FETCH", "processing")}).dispatches == ()
    after_fetch = decide(fetched, {"FETCH": StepState("FETCH", "completed")}).dispatches
    first = "TRANSCRIBE" if workflow == "transcribe_only" else "LID"
    assert [d.step_type for d in after_fetch] == [first]
    assert [d.step_type for d in decide({}, {}).dispatches] == [first]


def test_answers_show_the_audio_url_without_its_query() -> None:
    shown = shown_options({"audio_url": f"https://acct.blob.core.windows.net/in/a.wav?{SAS}#frag", "channels": "split"})
    assert shown == {"audio_url": "https://acct.blob.core.windows.net/in/a.wav", "channels": "split"}
    assert shown_options(None) == {}
