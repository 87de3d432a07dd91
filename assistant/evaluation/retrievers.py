"""The retrievers a golden file measures: the product as a user asks, and the naive baseline."""

from __future__ import annotations

from collections.abc import Sequence

from django.contrib.auth.models import User

from assistant.evaluation.baseline import NaivePipeline, StoredFile
from assistant.evaluation.golden import TOP_PASSAGES, Found, Retriever
from assistant.retrieval import passages_for_user
from ingestion.access import readable_documents
from ingestion.passage_vectors import dense


def product_retriever(user: User) -> Retriever:
    def retrieve(question: str) -> Sequence[Found]:
        return [
            Found(
                source=passage.source,
                pages=frozenset({passage.page}) if passage.page else frozenset(),
                heading=passage.heading,
                text=passage.text,
            )
            for passage in passages_for_user(user=user, query=question, k=TOP_PASSAGES)
        ]

    return retrieve


def readable_stored_files(user: User) -> list[StoredFile]:
    """The original file of each document the user may read, as search serves it."""
    files = []
    documents = readable_documents(user).select_related("current_version").order_by("id")
    for document in documents:
        version = document.current_version
        if version is None or not version.file:
            continue
        with version.file.open("rb") as stored:
            files.append(
                StoredFile(
                    source=document.source_path, name=version.original_name, data=stored.read()
                )
            )
    return files


def naive_pipeline_for(user: User) -> NaivePipeline:
    return NaivePipeline(readable_stored_files(user), dense().encode)
