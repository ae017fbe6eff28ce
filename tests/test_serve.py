"""makemore serve: the JSON API through a real server on 127.0.0.1 (in a thread), its bounds, and the command."""
import collections
import http.client
import json
import math
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO_NAMES, invoke, ok
from makemore import api, serve
from makemore.serve import ApiError, read_fields, read_json


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    """A folder with a counting bigram and a tiny transformer (trained last), on every 50th name."""
    folder = tmp_path_factory.mktemp("serve")
    data = folder / "names.txt"
    data.write_text("\n".join(REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    api.train("bigram", data, folder / "out", progress=False)
    api.train("transformer", data, folder / "out", model_options=dict(n_layer=2, n_head=2, n_embd=16),
              train_options=dict(steps=50), progress=False)
    return folder / "out"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A server on a folder of a labelled counting bigram and a labelled tiny transformer (trained last): the same
    names, labelled by whether they end in a vowel."""
    folder = tmp_path_factory.mktemp("labelled")
    names = REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]
    data = folder / "names.tsv"
    data.write_text("".join(f"{'vowel' if name[-1] in 'aeiouy' else 'consonant'}\t{name}\n" for name in names),
                    encoding="utf-8")
    api.train("bigram", data, folder / "out", labels=True, progress=False)
    api.train("transformer", data, folder / "out", labels=True, model_options=dict(n_layer=2, n_head=2, n_embd=16),
              train_options=dict(steps=50), progress=False)
    srv = serve.start(None, folder / "out", "127.0.0.1", 0, device="cpu", n_threads=1)
    thread = threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def server(out):
    srv = serve.start(None, out, "127.0.0.1", 0, device="cpu", n_threads=1)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def transformer(server):
    """The server holding the transformer, whatever an earlier test switched to."""
    assert call(server, "/api/switch", {"checkpoint": "transformer.safetensors"})[0] == 200
    return server


@pytest.fixture
def bigram(server):
    assert call(server, "/api/switch", {"checkpoint": "bigram.safetensors"})[0] == 200
    return server


def call(server, path, body=None, *, method=None, raw=None, headers=None):
    """(status, decoded JSON or text, headers) of one request to the server."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    sent = {"Content-Type": "application/json"} if data is not None else {}
    sent.update(headers or {})
    connection.request(method or ("POST" if data is not None else "GET"), path, body=data, headers=sent)
    response = connection.getresponse()
    text = response.read().decode("utf-8")
    connection.close()
    kind = response.getheader("Content-Type", "")
    return response.status, json.loads(text) if kind.startswith("application/json") else text, response


def error(server, path, body=None, **kwargs) -> tuple[int, str]:
    status, answer, _ = call(server, path, body, **kwargs)
    assert 400 <= status < 500, (status, answer)
    return status, answer["error"]


def test_the_page_and_its_files_come_from_the_package(server):
    status, page, response = call(server, "/")
    assert status == 200 and response.getheader("Content-Type") == "text/html; charset=utf-8"
    assert '<script src="/app.js"' in page and 'href="/style.css"' in page
    # nothing the page names may come from another host
    policy = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    for asset, kind in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, text, response = call(server, asset)
        assert status == 200 and response.getheader("Content-Type").startswith(kind)
        assert text == (Path(serve.__file__).parent / "page" / asset[1:]).read_text(encoding="utf-8")
    for page_file in Path(serve.__file__).parent.joinpath("page").iterdir():
        # no address of another host: the SVG namespace is a name, never fetched
        assert set(re.findall(r"\w+://[^\s\"'`]+", page_file.read_text())) <= {"http://www.w3.org/2000/svg"}


def test_the_model_summary_names_the_checkpoints_of_the_folder(transformer):
    status, summary, _ = call(transformer, "/api/model")
    assert status == 200
    assert summary["checkpoints"] == ["bigram.safetensors", "transformer.safetensors"]
    assert summary["checkpoint"] == "transformer.safetensors" and summary["model"] == "transformer"
    assert set(summary["pictures"]) == {"curve", "embeddings", "attention"}
    assert summary["labels"] is None and summary["label_counts"] is None


def test_sample_draws_what_the_library_draws_and_marks_each_item(transformer, out):
    status, answer, _ = call(transformer, "/api/sample", {"n": 8, "seed": 3, "temperature": 0.8, "prefix": "a"})
    assert status == 200, answer
    trained = api.load(out / "transformer.safetensors")
    expected = trained.sample(8, 3, temperature=0.8, prefix="a")
    assert [r["item"] for r in answer["items"]] == list(expected)
    assert [r["split"] for r in answer["items"]] == trained.where(list(expected))
    assert answer["report"] is None


def test_sample_marks_items_of_the_training_data(bigram, out, monkeypatch):
    monkeypatch.setattr(serve, "PATIENCE", 30.0)  # room for a busy machine: the draws take well under a second
    trained = api.load(out / "bigram.safetensors")
    parts = trained.splits()
    for split in ("train", "dev"):  # the likeliest short item of the split, asked for by a regex matching it alone
        item = max((i for i in parts[split] if len(i) <= 4), key=lambda i: trained.log_prob([i])[0])
        status, answer, _ = call(bigram, "/api/sample", {"n": 1, "seed": 1, "regex": item})
        assert status == 200 and answer["items"][0]["item"] == item and answer["items"][0]["split"] == split
    status, answer, _ = call(bigram, "/api/sample", {"n": 50, "seed": 1, "max_len": 3, "new": True, "unique": True})
    assert status == 200 and len(answer["items"]) == 50 and {r["split"] for r in answer["items"]} == {"new"}
    assert len({r["item"] for r in answer["items"]}) == 50
    assert trained.where([r["item"] for r in answer["items"]]) == ["new"] * 50


def test_the_next_character_is_what_score_says_of_each_continuation(transformer, out):
    status, answer, _ = call(transformer, "/api/next", {"prefix": "em"})
    assert status == 200
    trained = api.load(out / "transformer.safetensors")
    shown = {c["char"]: c["prob"] for c in answer["next"]}
    assert math.isclose(sum(shown.values()) + answer["rest"], 1.0, abs_tol=1e-9)
    for char, prob in list(shown.items())[:5]:
        item = "em" + (char or "")
        transition = trained.score([item])[0]["transitions"][2]  # after e and m: the character, or the end
        assert math.isclose(transition["prob"], prob, rel_tol=1e-6), (char, transition)
    probs = [c["prob"] for c in answer["next"]]
    assert probs == sorted(probs, reverse=True)


def test_the_end_is_always_offered(bigram, monkeypatch):
    monkeypatch.setattr(serve, "TOP_NEXT", 2)
    _, answer, _ = call(bigram, "/api/next", {"prefix": ""})  # no item is empty: the end's only count is add-1's
    assert [c["char"] is None for c in answer["next"]] == [False, False, True]
    assert math.isclose(sum(c["prob"] for c in answer["next"]) + answer["rest"], 1.0)


def test_next_applies_the_sampling_settings(transformer):
    _, answer, _ = call(transformer, "/api/next", {"prefix": "", "top_k": 3})
    assert len(answer["next"]) == 3 and math.isclose(sum(c["prob"] for c in answer["next"]), 1.0)
    _, warm, _ = call(transformer, "/api/next", {"prefix": "b"})
    _, cold, _ = call(transformer, "/api/next", {"prefix": "b", "temperature": 0.5})
    warm, cold = ({c["char"]: c["prob"] for c in answer["next"]} for answer in (warm, cold))
    for char in list(cold)[1:5]:  # at temperature t, p is proportional to p ** (1 / t)
        first = next(iter(cold))
        assert math.isclose(math.log(cold[first] / cold[char]), 2 * math.log(warm[first] / warm[char]), rel_tol=1e-6)


def test_score_gives_what_the_score_command_prints(transformer, out, tmp_path, monkeypatch):
    status, answer, _ = call(transformer, "/api/score", {"item": "emma"})
    assert status == 200
    monkeypatch.chdir(tmp_path)
    printed = json.loads(ok("score", "emma", "--json", "--checkpoint", out / "transformer.safetensors").output)
    assert math.isclose(answer["mean_nll"], printed["items"][0]["mean_nll"])
    assert [t["prob"] for t in answer["transitions"]] == [t["prob"] for t in printed["items"][0]["transitions"]]
    assert answer["n"] == 5 and answer["split"] in ("train", "dev", "test", "new")


def test_attention_rows_are_distributions_over_the_positions_so_far(transformer):
    status, answer, _ = call(transformer, "/api/attention", {"item": "ava"})
    assert status == 200
    assert answer["tokens"] == [".", "a", "v", "a"]
    assert len(answer["blocks"]) == 2 and all(len(heads) == 2 for heads in answer["blocks"])
    for heads in answer["blocks"]:
        for rows in heads:
            assert [len(row) for row in rows] == [1, 2, 3, 4]
            assert all(math.isclose(sum(row), 1.0, abs_tol=1e-3) for row in rows)
    _, message = error(transformer, "/api/attention", {"item": "a" * 40})
    assert "reads at most 12" in message


@pytest.mark.parametrize("alibi", [True, False])
def test_the_attention_drawn_is_the_one_the_forward_pass_mixes_by(alibi):
    import torch

    from makemore.models.transformer import Transformer, TransformerConfig

    torch.manual_seed(0)
    model = Transformer(TransformerConfig(block_size=6, n_layer=2, n_head=2, n_embd=8, alibi=alibi), 5).eval()
    idx = torch.tensor([[0, 3, 1, 4, 2]])
    weights = model.attention(idx)
    assert weights.shape == (2, 1, 2, 5, 5)
    with torch.no_grad():
        block = model.blocks[0]
        x = block.ln_1(model.wte(idx) + model.wpe(torch.arange(5)))
        _, _, v = block.attn.heads(x)
        mixed = torch.nn.functional.scaled_dot_product_attention(
            *block.attn.heads(x), attn_mask=model.attention_bias(5, "cpu"), is_causal=not alibi)
    assert torch.allclose(weights[0] @ v, mixed, atol=1e-6)
    assert torch.equal(weights.triu(1), torch.zeros_like(weights))  # nothing from a later position


def test_the_pictures_of_a_counting_bigram(bigram, out):
    status, summary, _ = call(bigram, "/api/model")
    assert summary["pictures"] == ["counts"]
    status, counts, _ = call(bigram, "/api/counts")
    assert status == 200 and counts["kind"] == "table" and counts["counts"]
    trained = api.load(out / "bigram.safetensors")
    # every transition of the training split is counted once: its characters and each item's end
    train = trained.splits()["train"]
    assert sum(map(sum, counts["table"])) == sum(len(item) + 1 for item in train)
    assert counts["table"][0][counts["labels"].index("a")] == sum(item.startswith("a") for item in train)
    _, message = error(bigram, "/api/embeddings")
    assert message == "a bigram model has no embeddings picture"
    _, message = error(bigram, "/api/attention", {"item": "ab"})
    assert "no attention" in message


def test_the_pictures_of_the_transformer(transformer, out):
    _, curve, _ = call(transformer, "/api/curve")
    assert curve["points"][-1]["step"] == 50 and any("dev_loss" in p for p in curve["points"])
    _, plane, _ = call(transformer, "/api/embeddings")
    assert len(plane["points"]) == len(plane["labels"]) == 27 and plane["axes"] == ["PC 1", "PC 2"]


def test_counts_beyond_a_bigram_are_the_commonest_contexts(server, tmp_path):
    data = tmp_path / "names.txt"
    data.write_text("\n".join(REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    api.train("ngram", data, tmp_path / "out", model_options=dict(block_size=3), progress=False)
    view = serve.View("ngram", api.load(tmp_path / "out" / "ngram.safetensors"))
    rows = view.picture("counts")["rows"]
    seen = collections.Counter(("..." + item + ".")[i:i + 3] for item in view.trained.splits()["train"]
                               for i in range(len(item) + 1))
    assert all(seen[r["context"]] == r["total"] for r in rows)  # ties may come in any order
    assert [r["total"] for r in rows] == [count for _, count in seen.most_common(len(rows))]
    assert rows[0]["context"] == "..." and rows[0]["total"] == len(view.trained.splits()["train"])
    assert [r["total"] for r in rows] == sorted((r["total"] for r in rows), reverse=True)
    assert rows[0]["next"][0][1] == max(c for _, c in rows[0]["next"])


def test_inspect_is_what_the_inspect_command_prints(transformer, out):
    status, info, _ = call(transformer, "/api/inspect")
    assert status == 200
    assert info == json.loads(ok("inspect", out / "transformer.safetensors", "--json").output)


def test_switching_takes_names_from_the_list_never_paths(server, out):
    for name in ("../out/bigram.safetensors", str(out / "bigram.safetensors"), "latest", "", "nope.safetensors"):
        status, message = error(server, "/api/switch", {"checkpoint": name})
        assert status == 404 and message.startswith("no checkpoint named")
    status, summary, _ = call(server, "/api/switch", {"checkpoint": "bigram.safetensors"})
    assert status == 200 and summary["model"] == "bigram"
    assert call(server, "/api/model")[1]["model"] == "bigram"


def test_a_damaged_checkpoint_is_refused_and_the_model_held_stays(server, out):
    (out / "broken.safetensors").write_bytes(b"not a checkpoint")
    try:
        before = call(server, "/api/model")[1]["checkpoint"]
        status, message = error(server, "/api/switch", {"checkpoint": "broken.safetensors"})
        assert status == 400 and "broken.safetensors" in message
        assert call(server, "/api/model")[1]["checkpoint"] == before
    finally:
        (out / "broken.safetensors").unlink()


@pytest.mark.parametrize("body, flags", [
    ({"prefix": "Zq"}, ["--prefix", "Zq"]),
    ({"top_k": 99}, ["--top-k", "99"]),
    ({"regex": "(a)\\1"}, ["--regex", "(a)\\1"]),
    ({"min_len": 500}, ["--min-len", "500"]),
])
def test_sampling_errors_are_the_commands_messages(transformer, out, body, flags, tmp_path, monkeypatch):
    _, message = error(transformer, "/api/sample", {"n": 3, **body})
    monkeypatch.chdir(tmp_path)
    printed = invoke("sample", "-n", "3", *flags, "--checkpoint", out / "transformer.safetensors")
    assert printed.exit_code != 0 and message in printed.output


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/sample", {"n": 1_000_000}, 400, "-n 1,000,000 is above the page's most"),
    ("/api/sample", {"temperature": 0}, 400, "--temperature must be above 0, not 0.0"),
    ("/api/sample", {"temperature": "hot"}, 400, "--temperature must be a number"),
    ("/api/sample", {"n": True}, 400, "-n must be a whole number"),
    ("/api/sample", {"seed": -1}, 400, "--seed must be from 0"),
    ("/api/sample", {"top_p": 2}, 400, "--top-p must be above 0 and at most 1"),
    ("/api/sample", {"prefix": "a" * 5000}, 400, "--prefix is 5,000 characters; the page takes at most 1,000"),
    ("/api/sample", {"label": "x"}, 400, "trained without labels, so --label does not apply"),
    ("/api/next", {"label": "x"}, 400, "trained without labels, so --label does not apply"),
    ("/api/score", {"item": "ab", "label": "x"}, 400, "trained without labels, so --label does not apply"),
    ("/api/classify", {"item": "ab"}, 400, "trained without labels, so classify does not apply"),
    ("/api/attention", {"item": "ab", "label": "x"}, 400, "trained without labels, so --label does not apply"),
    ("/api/sample", {"colour": 1}, 400, "has no field 'colour'"),
    ("/api/sample", [1, 2], 400, "takes a JSON object"),
    ("/api/sample", {"regex": "[0-9]+", "n": 2}, 422, "found 0"),
    ("/api/next", {"prefix": "a\ud800"}, 400, "never saw"),
    ("/api/score", {"item": ""}, 400, "cannot score an empty item"),
    ("/api/score", {"item": "Émile"}, 400, "not in the model's vocabulary"),
    ("/api/nothing", {}, 404, "no such page or endpoint"),
    ("/api/model", {}, 405, "answers GET, not POST"),
])
def test_bad_requests_get_a_clear_error(transformer, monkeypatch, path, body, status, words):
    monkeypatch.setattr(serve, "PATIENCE", 0.3)
    got, message = error(transformer, path, body)
    assert got == status and words in message, message


def test_malformed_requests(transformer):
    assert error(transformer, "/api/sample", raw=b'{"temperature": NaN}') == (
        400, "the request is not JSON (NaN is not a JSON number)")
    assert error(transformer, "/api/sample", raw=b"\xff{")[0] == 400
    assert error(transformer, "/api/sample", raw=b"[" * 20000)[0] == 400
    assert error(transformer, "/api/sample", raw=b'{"temperature": 1e999}') == (
        400, "--temperature must be above 0, not inf")
    body = json.dumps({"n": 1, "prefix": "a" * (1 << 20)}).encode()
    status, message = error(transformer, "/api/sample", raw=body)  # read, then refused
    assert status == 413 and message == f"the request is {len(body):,} bytes; the server takes at most 65,536"
    status, message = error(transformer, "/api/sample", raw=b"{}", headers={"Content-Length": str(1 << 30)})
    assert status == 413  # refused unread
    assert error(transformer, "/api/sample", raw=b"{}", headers={"Content-Type": "text/plain"})[0] == 415
    assert error(transformer, "/api/sample", raw=b"{}", headers={"Content-Length": "lots"})[0] == 411
    status, message = error(transformer, "/api/model", headers={"Host": "evil.example:80"})
    assert status == 403
    assert call(transformer, "/api/model", method="DELETE")[0] == 501  # the standard library's answer
    assert call(transformer, "/api/model", headers={"Host": "localhost"})[0] == 200


def test_a_sampling_request_does_not_hold_up_the_others(transformer, monkeypatch):
    monkeypatch.setattr(serve, "PATIENCE", 1.5)
    hopeless = threading.Thread(target=call, args=(transformer, "/api/sample", {"n": 5, "regex": "[0-9]+"}))
    hopeless.start()
    answered = [call(transformer, "/api/next", {"prefix": p})[0] for p in ("", "a", "an", "ann")]
    assert hopeless.is_alive(), "the hopeless request ended before the others were answered"
    hopeless.join()
    assert answered == [200] * 4


def test_concurrent_requests_each_get_their_own_answer(transformer):
    results = {}

    def ask(i):
        results[i] = call(transformer, "/api/score", {"item": "ab" * (i + 1)})[1]["n"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == {i: 2 * (i + 1) + 1 for i in range(12)}


def test_a_labelled_model_says_its_labels_and_their_pictures(labelled):
    status, summary, _ = call(labelled, "/api/model")
    trained = labelled.explorer.view.trained
    assert summary["labels"] == ["consonant", "vowel"] and summary["label_counts"] == trained.label_counts
    assert summary["pictures"] == ["curve", "embeddings", "attention", "labels"]


def test_sample_by_label_draws_what_the_library_draws_under_it(labelled):
    trained = labelled.explorer.view.trained
    for label in ("vowel", "consonant", None):
        status, answer, _ = call(labelled, "/api/sample", {"n": 6, "seed": 2, "label": label})
        assert status == 200, answer
        expected = trained.sample(6, 2, label=label)
        assert [(r["item"], r["label"]) for r in answer["items"]] == list(zip(expected, expected.labels))
        assert [r["log_prob"] for r in answer["items"]] == [round(lp, 4) for lp in
                                                             trained.log_prob(list(expected), expected.labels)]
    assert {r["label"] for r in answer["items"]} == {"vowel", "consonant"}  # any label: both, by their counts


def test_the_next_character_depends_on_the_label(labelled):
    trained = labelled.explorer.view.trained
    answers = {}
    for label in ("vowel", "consonant", None):
        status, answer, _ = call(labelled, "/api/next", {"prefix": "ann", "label": label})
        assert status == 200 and answer["label"] == label
        answers[label] = {c["char"]: c["prob"] for c in answer["next"]}
        assert math.isclose(sum(answers[label].values()) + answer["rest"], 1.0, abs_tol=1e-9)
    for label in ("vowel", "consonant"):  # what score says of each continuation under that label
        for char, prob in list(answers[label].items())[:3]:
            transition = trained.score(["ann" + (char or "")], label)[0]["transitions"][3]
            assert math.isclose(transition["prob"], prob, rel_tol=1e-5), (label, char)
    assert answers["vowel"] != answers["consonant"]
    share = dict(zip(trained.labels, (c / sum(trained.label_counts) for c in trained.label_counts)))
    for char in list(answers[None])[:3]:  # any label: the labels' averaged by their training counts
        mixed = sum(share[label] * answers[label].get(char, 0.0) for label in share)
        assert math.isclose(answers[None][char], mixed, rel_tol=1e-5), char


def test_score_under_a_label_or_the_likeliest_as_the_score_command(labelled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = labelled.explorer.view.trained.path
    for flags, body in (([], {}), (["--label", "consonant"], {"label": "consonant"})):
        _, answer, _ = call(labelled, "/api/score", {"item": "emma", **body})
        printed = json.loads(ok("score", "emma", "--json", *flags, "--checkpoint", path).output)["items"][0]
        assert (answer["label"], answer["label_source"]) == (printed["label"], printed["label_source"])
        assert [t["prob"] for t in answer["transitions"]] == [t["prob"] for t in printed["transitions"]]
    assert answer["label_source"] == "given"


def test_the_posterior_is_what_classify_gives(labelled):
    status, answer, _ = call(labelled, "/api/classify", {"item": "emma"})
    assert status == 200
    assert answer == labelled.explorer.view.trained.classify(["emma"])[0]
    assert math.isclose(sum(p["probability"] for p in answer["labels"]), 1.0, rel_tol=1e-9)
    assert {p["label"] for p in answer["labels"]} == {"vowel", "consonant"}


def test_attention_under_a_label(labelled):
    _, given, _ = call(labelled, "/api/attention", {"item": "ava", "label": "consonant"})
    _, likeliest, _ = call(labelled, "/api/attention", {"item": "ava"})
    assert (given["label"], given["label_source"]) == ("consonant", "given")
    assert likeliest["label"] == labelled.explorer.view.trained.classify(["ava"])[0]["label"]
    assert likeliest["label_source"] == "most likely"
    import torch

    trained = labelled.explorer.view.trained
    ids, label = torch.tensor([[0] + trained.vocab.encode("ava")]), torch.tensor(trained.label_ids(["consonant"]))
    weights = trained.model.attention(ids, label)
    assert given["blocks"][1][0][3] == [round(w, 4) for w in weights[1, 0, 0, 3].tolist()]


def test_an_unknown_label_gets_the_sample_commands_message(labelled, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    printed = invoke("sample", "--label", "xx", "--checkpoint", labelled.explorer.view.trained.path)
    assert printed.exit_code == 1
    assert printed.output == "Error: --label 'xx' is not a label of this model; its labels: consonant, vowel\n"
    for path, body in (("/api/sample", {"n": 1}), ("/api/next", {"prefix": "a"}), ("/api/score", {"item": "ab"}),
                       ("/api/attention", {"item": "ab"})):
        assert error(labelled, path, {**body, "label": "xx"}) == (400, printed.output[len("Error: "):-1]), path


def test_the_counts_of_a_labelled_bigram(labelled):
    try:
        assert call(labelled, "/api/switch", {"checkpoint": "bigram.safetensors"})[0] == 200
        _, counts, _ = call(labelled, "/api/counts")
        train = labelled.explorer.view.trained.splits()["train"]
        assert counts["counts"] and not counts["averaged"]  # the labels' counts pooled
        assert sum(map(sum, counts["table"])) == sum(len(item) + 1 for item in train)
    finally:
        call(labelled, "/api/switch", {"checkpoint": "transformer.safetensors"})


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                    max_leaves=8)


@given(body=JSON)
def test_read_fields_takes_only_well_typed_fields(body):
    try:
        values = read_fields(body, serve.SAMPLE_FIELDS, "/api/sample")
    except ApiError as e:
        assert e.status == 400 and str(e)
        return
    for name, value in values.items():
        assert type(value) is serve.SAMPLE_FIELDS[name]
        assert not isinstance(value, str) or len(value) <= serve.MAX_TEXT


@given(data=st.binary(max_size=200) | JSON.map(lambda v: json.dumps(v).encode()))
def test_read_json_refuses_what_is_not_json(data):
    try:
        value = read_json(data)
    except ApiError as e:
        assert e.status == 400 and str(e).startswith("the request is not JSON")
        return
    assert json.loads(json.dumps(value)) == value


FIELD_VALUES = {
    "n": st.integers(-2, 6) | st.integers(), "seed": st.integers(-1, 2**64), "temperature": st.floats(),
    "top_k": st.integers(-1, 40), "top_p": st.floats(-1, 2), "prefix": st.text("abzZ.\n", max_size=4),
    "suffix": st.text("abz", max_size=2), "min_len": st.integers(-1, 30), "max_len": st.integers(-1, 30),
    "regex": st.sampled_from(["a.*", "(", "[0-9]", ".*"]), "new": st.booleans(), "unique": st.booleans(),
}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.fixed_dictionaries({}, optional=FIELD_VALUES))
def test_any_sampling_request_is_answered_or_refused_never_a_failure(transformer, body):
    serve.PATIENCE, saved = 0.2, serve.PATIENCE
    try:
        raw = json.dumps(body).encode()  # a NaN temperature goes as NaN, which JSON does not have
        status, answer, _ = call(transformer, "/api/sample", raw=raw)
    finally:
        serve.PATIENCE = saved
    assert status in (200, 400, 422), answer
    if status == 200:
        assert len(answer["items"]) <= max(body.get("n", 10), 0)


def test_serve_without_a_checkpoint_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("serve")
    assert result.exit_code == 1 and "no checkpoint in out/; train one first" in result.output


def test_serve_prints_the_address_and_opens_a_browser_only_when_asked(out, monkeypatch):
    opened = []
    monkeypatch.setattr(serve.Server, "run", lambda self: self.server_close())
    monkeypatch.setattr("webbrowser.open", lambda url: opened.append(url) or True)
    result = ok("serve", "--out", out, "--threads", "1")
    assert result.output.startswith("serving transformer.safetensors at http://127.0.0.1:") and not opened
    result = ok("serve", "--out", out, "--checkpoint", out / "bigram.safetensors", "--open", "--threads", "1")
    url = result.output.split(" at ")[1].split()[0]
    assert result.output.startswith("serving bigram.safetensors") and opened == [url]


def test_a_port_in_use_is_a_one_line_error(server, out):
    result = invoke("serve", "--out", out, "--port", server.server_address[1])
    assert result.exit_code == 1
    assert result.output.strip() == (f"Error: cannot listen on 127.0.0.1 port {server.server_address[1]}: "
                                     "Address already in use")


def test_ctrl_c_stops_the_server_without_a_traceback(out):
    # Ctrl-C's default handling, as in a terminal: a test run in the background of a shell inherits SIGINT ignored
    process = subprocess.Popen([sys.executable, "-m", "makemore", "serve", "--out", str(out), "--threads", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        assert line.startswith("serving transformer.safetensors at http://127.0.0.1:"), line
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 130 and stderr == "interrupted\n"
