"""Web sources against a real HTTP server on loopback: sitemap, robots.txt, ETags, 404/410."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User

from assistant.retrieval import passages_for_user
from audit.models import AuditRecord
from bench.intranet_site import IntranetSite
from ingestion.models import Document
from sources.models import RunStatus, Source, SourceItem
from sources.services import SourceRefused, source_add
from tests.sources.conftest import Sync

pytestmark = pytest.mark.django_db


@pytest.fixture
def site() -> Iterator[IntranetSite]:
    site = IntranetSite().start()
    site.html(
        "/",
        "Intranet",
        "Welcome to the intranet.",
        (
            "/policies/travel.html",
            "/policies/parking.html",
            "/private/salaries.html",
            "http://elsewhere.invalid/page.html",
        ),
    )
    site.html("/policies/travel.html", "Travel", "Train journeys over four hours go first class.")
    site.html("/policies/parking.html", "Parking", "Visitors park in the north garage.")
    site.html("/private/salaries.html", "Salaries", "Robots may not read this page.")
    site.html("/handbook.html", "Handbook", "The handbook is linked from the sitemap only.")
    yield site
    site.stop()


@pytest.fixture
def staff() -> User:
    user = User.objects.create_user("employee")
    user.groups.add(Group.objects.create(name="staff"))
    return user


def web_source(site: IntranetSite, **options: str) -> Source:
    return source_add(
        name="intranet",
        kind="web",
        location=f"{site.url}/",
        options={"sitemap": f"{site.url}/sitemap.xml", **options},
        groups=[Group.objects.get_or_create(name="staff")[0]],
    )


def keys() -> set[str]:
    return {
        key.split("/", 3)[-1]
        for key in SourceItem.objects.filter(deleted_at__isnull=True).values_list("key", flat=True)
    }


def test_a_site_is_crawled_within_its_scope_and_robots_txt(
    site: IntranetSite, staff: User, sync: Sync
) -> None:
    run = sync(web_source(site))
    assert run.status == RunStatus.OK
    assert run.new == 4
    assert keys() == {"", "policies/travel.html", "policies/parking.html", "handbook.html"}
    hits = passages_for_user(user=staff, query="when may I travel first class by train")
    assert hits[0].source == f"{site.url}/policies/travel.html"
    assert Document.objects.get(source_path=f"{site.url}/handbook.html").title == "Handbook"


def test_an_unchanged_site_costs_no_body_download(site: IntranetSite, sync: Sync) -> None:
    source = web_source(site)
    sync(source, ingest=False)
    site.reset_counts()
    again = sync(source, ingest=False)
    assert again.counts() == {"new": 0, "changed": 0, "unchanged": 4, "deleted": 0, "failed": 0}
    assert site.page_bodies_sent == 0
    assert site.not_modified == 4 + 2  # the pages, robots.txt and the sitemap


def test_changed_pages_are_new_versions_and_vanished_pages_are_deleted(
    site: IntranetSite, staff: User, sync: Sync
) -> None:
    source = web_source(site)
    sync(source)
    site.html("/policies/travel.html", "Travel", "Train journeys over six hours go first class.")
    del site.pages["/policies/parking.html"]  # 404, and still linked from the home page
    del site.pages["/handbook.html"]  # 410, and gone from the sitemap
    site.gone.add("/handbook.html")
    site.reset_counts()
    run = sync(source)
    assert run.counts() == {"new": 0, "changed": 1, "unchanged": 1, "deleted": 2, "failed": 0}
    assert site.page_bodies_sent == 1
    assert keys() == {"", "policies/travel.html"}
    hits = passages_for_user(user=staff, query="when may I travel first class by train")
    assert "six hours" in hits[0].text
    parking_hits = passages_for_user(user=staff, query="where do visitors park")
    assert all("north garage" not in hit.text for hit in parking_hits)


def test_a_site_that_is_down_fails_the_run_and_deletes_nothing(
    site: IntranetSite, sync: Sync
) -> None:
    source = web_source(site)
    sync(source, ingest=False)
    site.down = True
    run = sync(source, ingest=False)
    assert run.status == RunStatus.FAILED
    assert "HTTP 503" in run.error
    assert run.deleted == 0
    assert len(keys()) == 4


def test_the_auth_header_comes_from_a_secret_file_and_is_never_stored(
    site: IntranetSite, tmp_path: Path, sync: Sync, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    site.required_header = ("Authorization", "Bearer s3cret-intranet")
    secret = tmp_path / "intranet-header"
    secret.write_text("Authorization: Bearer s3cret-intranet\n")
    source = web_source(site, header_file=str(secret))
    assert sync(source, ingest=False).new == 4
    stored = json.dumps(list(Source.objects.values()), default=str) + json.dumps(
        [record.details for record in AuditRecord.objects.all()]
    )
    assert "s3cret" not in stored
    assert "s3cret" not in caplog.text
    with pytest.raises(SourceRefused, match="header_file"):
        source_add(name="clear", kind="web", location=site.url, options={"header": "Bearer x"})

    secret.unlink()
    failed = sync(source, ingest=False)
    assert failed.status == RunStatus.FAILED
    assert "header file cannot be read" in failed.error


def test_a_crawl_cut_short_by_max_pages_deletes_nothing_it_did_not_reach(
    site: IntranetSite, sync: Sync
) -> None:
    source = web_source(site)
    sync(source, ingest=False)
    Source.objects.filter(pk=source.pk).update(
        options={"sitemap": f"{site.url}/sitemap.xml", "max_pages": "2"}
    )
    source.refresh_from_db()
    run = sync(source, ingest=False)
    assert (run.status, run.deleted, run.unchanged, run.failed) == (RunStatus.OK, 0, 2, 1)
    assert "max_pages (2)" in run.failures[0]["reason"]
    assert len(keys()) == 4
