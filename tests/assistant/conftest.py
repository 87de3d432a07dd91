from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, User

from inference.simulator import SimulatorHandle, run_simulator_in_thread
from ingestion.runner import run_pending_once
from ingestion.services import document_upload_bytes

CANARY = "The launch code for Project Nightjar is 7-4-1-9."


class Library:
    """Three documents with different readers, and one user for each kind of access."""

    def __init__(self) -> None:
        self.group_a = Group.objects.create(name="research")
        self.group_b = Group.objects.create(name="sales")
        self.alice = User.objects.create_user("alice", password="pw-alice-123")
        self.alice.groups.add(self.group_a)
        self.bob = User.objects.create_user("bob", password="pw-bob-123")
        self.bob.groups.add(self.group_b)
        self.nobody = User.objects.create_user("nobody", password="pw-nobody-123")
        document_upload_bytes(
            name="nightjar.md",
            data=(
                "# Project Nightjar\n\n"
                f"{CANARY} The code was approved by the security board in March.\n\n"
                "## Schedule\n\nThe first test flight of Project Nightjar is planned for "
                "the autumn, after the wind tunnel trials.\n"
            ).encode(),
            groups=[self.group_a],
        )
        document_upload_bytes(
            name="travel-policy.md",
            data=(
                b"# Travel policy\n\nEmployees book train travel in second class for "
                b"journeys under four hours. Flights need approval from a director.\n\n"
                b"## Expenses\n\nMeals are reimbursed up to 40 euros a day with receipts.\n"
            ),
            is_public=True,
        )
        document_upload_bytes(
            name="pricing.md",
            data=(
                b"# Pricing 2027\n\nThe list price of the Kestrel licence rises to 1,200 "
                b"euros per seat. Discounts above 20 percent need approval from sales "
                b"leadership.\n"
            ),
            groups=[self.group_b],
        )
        run_pending_once()


@pytest.fixture
def library(db: None) -> Library:
    return Library()


@pytest.fixture
def simulator() -> Iterator[SimulatorHandle]:
    with run_simulator_in_thread(port=0) as handle:
        yield handle
