from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.embedder import (
    DenseEncoder,
    SparseEncoder,
    _QuestionBatcher,
    best_precision,
    bundled_model_path,
    embedding_dimension,
    encoder_identity,
    resolve_precision,
)

TEXTS = [
    "Visitors park on level minus two of the north garage.",
    "The canteen opens at half past eleven.",
]


@pytest.fixture(scope="module")
def fp32() -> DenseEncoder:
    return DenseEncoder(precision="fp32")


def test_vectors_are_unit_length_and_similar_texts_are_close(fp32: DenseEncoder) -> None:
    vectors = fp32.encode([*TEXTS, "Where can guests leave their car?"])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert vectors[2] @ vectors[0] > vectors[2] @ vectors[1]


def test_bf16_gives_nearly_the_same_vectors(fp32: DenseEncoder) -> None:
    bf16 = DenseEncoder(precision="bf16")
    similarity = (bf16.encode(TEXTS) * fp32.encode(TEXTS)).sum(axis=1)
    assert similarity.min() > 0.999


def test_auto_precision_follows_the_cpu() -> None:
    assert resolve_precision("auto") == best_precision()
    assert resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="EMBEDDING_PRECISION"):
        resolve_precision("fp8")


def test_sparse_vectors_weigh_the_words_of_a_document() -> None:
    encoder = SparseEncoder()
    doc_indices, doc_values = encoder.encode_document("garage garage parking level")
    query_indices, query_values = encoder.encode_query("garage")
    assert set(query_indices) <= set(doc_indices)
    assert all(value == 1.0 for value in query_values)
    assert max(doc_values) > min(doc_values)


def test_questions_asked_at_once_get_the_same_vectors_as_alone(fp32: DenseEncoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # More than one group of the question encoder, of lengths in no order: each caller
    # still gets the vector of its own question.
    questions = [
        f"Where do visitors park on day {day}?" + " And for how long?" * (day * 7 % 5)
        for day in range(40)
    ]
    alone = [fp32.encode([question])[0] for question in questions]
    with ThreadPoolExecutor(40) as pool:
        together = list(pool.map(fp32.encode_query, questions))
    for single, batched in zip(alone, together, strict=True):
        assert float(np.dot(single, batched)) > 0.9999


def test_a_question_given_up_while_it_waits_does_not_stop_the_next_ones(fp32: DenseEncoder) -> None:
    import threading

    # The encoder is held on a first question while a second one waits and is given up,
    # as when the person asking closes the page.
    busy, go_on = threading.Event(), threading.Event()

    def encode(texts: list[str]) -> np.ndarray:
        busy.set()
        go_on.wait(timeout=30)
        return fp32.encode(texts)

    questions = _QuestionBatcher(encode)
    first = questions.submit("Where do visitors park?")
    assert busy.wait(timeout=30)
    given_up = questions.submit("When does the canteen open?")
    assert given_up.cancel()
    go_on.set()

    assert len(first.result(timeout=30)) == fp32.dimension
    later = questions.submit("Who approves travel abroad?")
    vector = later.result(timeout=30)
    assert float(np.dot(vector, fp32.encode(["Who approves travel abroad?"])[0])) > 0.9999


def test_the_vector_size_is_read_from_the_model_files_and_matches_the_model(
    fp32: DenseEncoder, tmp_path: Path
) -> None:
    assert embedding_dimension("") == fp32.dimension == 384
    # A model with a projection layer makes vectors of the projected size.
    folder = tmp_path / "projected"
    shutil.copytree(bundled_model_path(), folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(
        2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    )
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "2_Dense").mkdir()
    (folder / "2_Dense" / "config.json").write_text(
        json.dumps({"in_features": 384, "out_features": 128})
    )
    assert embedding_dimension(str(folder)) == 128


PASSAGES = [
    "Visitors park on level minus two of the north garage.",
    "Hotels may cost at most 180 euros a night in every city.",
    "The Heron archive keeps expense reports for seven years in the basement vault.",
]


def test_openvino_compiles_the_same_model_once_and_gives_the_same_vectors(
    fp32: DenseEncoder, tmp_path: Path
) -> None:
    compiled = DenseEncoder(precision="fp32", backend="openvino", cache_dir=tmp_path)
    assert compiled.backend == "openvino"
    exports = list(tmp_path.glob("*/model.xml"))
    assert len(exports) == 1, "the export is kept for the next start"
    # An index built by one engine stays valid with the other: same vectors, same order.
    cosine = np.sum(compiled.encode(PASSAGES) * fp32.encode(PASSAGES), axis=1)
    assert cosine.min() > 0.9999
    query = np.asarray(compiled.encode_query("Where can visitors park?"))
    assert int(np.argmax(compiled.encode(PASSAGES) @ query)) == 0
    again = DenseEncoder(precision="fp32", backend="openvino", cache_dir=tmp_path)
    assert list(tmp_path.glob("*/model.xml")) == exports
    assert np.allclose(again.encode(PASSAGES), compiled.encode(PASSAGES), atol=1e-6)

    # Many passages at once run as small requests side by side: each vector still belongs
    # to its own passage, whatever order the requests finish in.
    many = [
        f"{passage} Copy {number}: {'more words ' * (number % 7)}"
        for number, passage in enumerate(PASSAGES * 30)
    ]
    assert len(many) > (compiled.passages_per_request or 0) * 2
    cosine = np.sum(compiled.encode(many) * fp32.encode(many), axis=1)
    assert cosine.min() > 0.9999

    # Work set aside on one core (an answer's support measure) gets the same vectors.
    with compiled.on_one_core(), fp32.on_one_core():
        aside, aside_torch = compiled.encode(many), fp32.encode(many)
    assert np.sum(aside * fp32.encode(many), axis=1).min() > 0.9999
    assert np.sum(aside_torch * fp32.encode(many), axis=1).min() > 0.9999


def test_auto_keeps_an_engine_whose_vectors_match_torch(tmp_path: Path) -> None:
    chosen = DenseEncoder(precision="fp32", backend="auto", cache_dir=tmp_path)
    assert chosen.backend in ("torch", "openvino")
    assert "cosine" in chosen.backend_note or "not" in chosen.backend_note

    # A later start on the same CPU keeps the first start's choice without measuring again.
    restarted = DenseEncoder(precision="fp32", backend="auto", cache_dir=tmp_path)
    assert restarted.backend == chosen.backend
    assert restarted.backend_note == f"{chosen.backend_note} (measured at an earlier start)"
    assert np.allclose(restarted.encode(PASSAGES), chosen.encode(PASSAGES), atol=1e-5)


RESTART = """
import json, sys
from pathlib import Path
from inference.embedder import DenseEncoder
encoder = DenseEncoder(precision="fp32", backend="auto", cache_dir=Path(sys.argv[1]))
passages = encoder.encode(json.loads(sys.argv[2])).tolist()
question = encoder.encode_query(sys.argv[3])
print(json.dumps({"torch": "torch" in sys.modules, "backend": encoder.backend,
                  "passages": passages, "question": question, "note": encoder.question_note}))
"""


def test_a_restart_with_its_choices_kept_loads_no_torch_and_gives_the_same_vectors(
    tmp_path: Path,
) -> None:
    first = DenseEncoder(precision="fp32", backend="auto", cache_dir=tmp_path)
    if first.backend != "openvino":
        pytest.skip("torch was measured faster on this CPU, so every start needs it")
    question = "Where can visitors park?"
    first_question = np.asarray(first.encode_query(question))

    restart = subprocess.run(
        [sys.executable, "-c", RESTART, str(tmp_path), json.dumps(PASSAGES), question],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert restart.returncode == 0, restart.stderr[-2000:]
    seen = json.loads(restart.stdout.strip().splitlines()[-1])
    # Importing torch and sentence-transformers was most of a start (seconds).
    assert seen["torch"] is False
    assert seen["backend"] == "openvino"
    assert seen["note"].endswith("(measured at an earlier start)")
    assert np.allclose(seen["passages"], first.encode(PASSAGES), atol=1e-6)
    assert np.allclose(seen["question"], first_question, atol=1e-6)


def test_an_unknown_engine_is_refused_with_the_choices() -> None:
    with pytest.raises(ValueError, match="auto, torch, openvino"):
        DenseEncoder(backend="tensorrt")


def test_questions_go_to_the_engine_measured_faster_and_match_passages(tmp_path: Path) -> None:
    compiled = DenseEncoder(precision="fp32", backend="openvino", cache_dir=tmp_path)

    query = np.asarray(compiled.encode_query("Where can visitors park?"))

    assert compiled.question_backend in ("torch", "openvino")
    # The note names both engines' times, so an operator sees why one was chosen.
    assert "OpenVINO" in compiled.question_note
    assert "torch" in compiled.question_note
    assert int(np.argmax(compiled.encode(PASSAGES) @ query)) == 0
    assert float(np.dot(query, compiled.encode(["Where can visitors park?"])[0])) > 0.9999


QUESTIONS = {
    "Where can visitors park?": 0,
    "How much may a hotel room cost?": 1,
    "How long are expense reports kept?": 2,
}


@pytest.mark.slow
def test_int8_is_made_once_and_ranks_passages_as_full_precision_does(
    fp32: DenseEncoder, tmp_path: Path
) -> None:
    quantized = DenseEncoder(precision="int8", backend="auto", cache_dir=tmp_path)

    assert (quantized.backend, quantized.precision) == ("openvino", "int8")
    kept = list(tmp_path.glob("*int8*/model.xml"))
    assert len(kept) == 1, "the quantized model is kept for the next start"
    passages = quantized.encode(PASSAGES)
    # Close to full precision, though not close enough to share an index with it.
    assert np.sum(passages * fp32.encode(PASSAGES), axis=1).min() > 0.97
    for question, answer in QUESTIONS.items():
        vector = np.asarray(quantized.encode_query(question))
        assert int(np.argmax(passages @ vector)) == answer, question
        # Questions are encoded by the quantized model too, in the passages' space.
        assert float(vector @ quantized.encode([question])[0]) > 0.9999
    # Never torch for questions, even where it answers one sooner: its vectors are fp32.
    assert quantized.question_backend == "openvino"
    assert "int8" in quantized.question_note

    restarted = DenseEncoder(precision="int8", backend="auto", cache_dir=tmp_path)
    assert list(tmp_path.glob("*int8*/model.xml")) == kept
    assert np.allclose(restarted.encode(PASSAGES), passages, atol=1e-5)


def test_int8_on_torch_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValueError, match="EMBEDDING_BACKEND to auto or openvino"):
        DenseEncoder(precision="int8", backend="torch")


def test_an_index_records_int8_vectors_apart_from_full_precision_ones() -> None:
    full, quantized = encoder_identity("", "auto"), encoder_identity("", "int8")

    assert "vectors" not in full, "indexes recorded before int8 existed stay valid"
    assert quantized == {**full, "vectors": "int8"}
    assert encoder_identity("", "bf16") == encoder_identity("", "fp32") == full
