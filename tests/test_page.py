"""The page of makemore serve, driven as a person would in a real headless Chromium (Debian's, via playwright):
every panel, a checkpoint switch, no console error and no request to another host. MAKEMORE_SCREENSHOTS=DIR
also saves the README's screenshots there."""
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path

import pytest

from conftest import REPO_NAMES
from makemore import api, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason="no chromium installed (apt-get install chromium; .ci/run installs it)")
sync_api = pytest.importorskip("playwright.sync_api", reason="the test extra's playwright is not installed")
expect = sync_api.expect
# the browser is Debian's: playwright never downloads one, and no feature of it may call out
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-default-apps", "--disable-extensions"]
SCREENSHOTS = os.environ.get("MAKEMORE_SCREENSHOTS")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("page")
    data = folder / "names.txt"
    data.write_text("\n".join(REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]) + "\n", encoding="utf-8")
    api.train("bigram", data, folder / "out", progress=False)
    api.train("transformer", data, folder / "out", model_options=dict(n_layer=2, n_head=2, n_embd=16),
              train_options=dict(steps=2000 if SCREENSHOTS else 50), progress=False)  # the README's: real names
    srv = serve.start(None, folder / "out", "127.0.0.1", 0, device="cpu", n_threads=1)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                               args=FLAGS, viewport={"width": 1280, "height": 900})
        yield context
        context.close()


def shot(page, name: str, selector: str | None = None, height: int | None = None) -> None:
    """With MAKEMORE_SCREENSHOTS: the page (or one panel, its top height pixels) as a small PNG of 64 colours."""
    if not SCREENSHOTS:
        return
    import io

    from PIL import Image  # matplotlib's dependency, in the test extra

    target = page.locator(selector) if selector else page
    image = Image.open(io.BytesIO(target.screenshot(animations="disabled"))).convert("RGB")
    if height is not None:
        image = image.crop((0, 0, image.width, min(height, image.height)))
    image.quantize(colors=64).save(Path(SCREENSHOTS) / f"serve-{name}.png", optimize=True)


def open_page(browser, url: str):
    """A new page loaded from url, with the lists of the requests it makes and the errors it logs."""
    page = browser.new_page()
    requests, errors = [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(10_000)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page, requests, errors


def test_every_panel_in_a_real_browser(server, browser):
    page, requests, errors = open_page(browser, server.url)
    assert page.text_content("#about").startswith("transformer: 26 characters")
    assert page.locator("#checkpoint option").all_text_contents() == ["bigram.safetensors", "transformer.safetensors"]
    assert page.locator("#inspect th").all_text_contents()[:2] == ["checkpoint", "file_size"]
    assert page.locator("#picture-tabs button").all_text_contents() == ["training curve", "embedding plane", "attention"]
    expect(page.locator("#picture svg polyline.dev")).to_have_count(1)  # the first tab: the training curve
    assert page.is_hidden("#label-control")  # the checkpoint has no labels

    # Sample: what the library draws for the same settings, each item marked
    page.fill("#n", "6")
    page.fill("#seed", "3")
    page.fill("#prefix", "a")
    page.click("#sample-button")
    expect(page.locator("#samples li")).to_have_count(6)
    drawn = page.locator("#samples .item").all_text_contents()
    assert drawn == list(server.explorer.view.trained.sample(6, 3, prefix="a"))
    assert set(page.locator("#samples .mark").all_text_contents()) <= {"new", "train", "dev", "test"}
    shot(page, "sample", "#sample-panel")

    # Next character: type a prefix, extend it by clicking the likeliest character twice, then end it
    page.fill("#next-prefix", "e")
    for _ in range(2):
        before = page.input_value("#next-prefix")
        # the bars of this prefix, not those still shown for the one before
        first = page.locator(f'#next-bars[data-prefix="{before}"] button.choice:not(.end)').first
        char = first.get_attribute("data-char")
        first.click()
        expect(page.locator("#next-prefix")).to_have_value(before + char)
    prefix = page.input_value("#next-prefix")
    assert len(prefix) == 3 and prefix[0] == "e"
    shot(page, "next", "#next-panel")
    page.click("#next-bars button.choice.end")
    page.wait_for_selector("#next-done:not([hidden])")
    assert page.text_content("#next-done").startswith(f"“{prefix}” ends here")
    expect(page.locator("#score-chars .ch")).to_have_count(len(prefix) + 1)

    # Score: each character coloured, the loss per character as makemore score gives it
    page.fill("#score-item", "emma")
    page.click("#score-button")
    expect(page.locator("#score-chars .ch")).to_have_count(5)
    result = server.explorer.view.trained.score(["emma"])[0]
    summary = page.text_content("#score-summary")
    assert summary.startswith(f"loss {result['mean_nll']:.4f} nats per character")
    colours = page.eval_on_selector_all("#score-chars .ch", "spans => spans.map(s => s.style.backgroundColor)")
    assert all(colour.startswith("rgb(") for colour in colours)
    shot(page, "score", "#score-panel")

    # Pictures: the embedding plane, then the attention of a typed item, per block and head
    page.click("#picture-tabs button[data-picture=embeddings]")
    expect(page.locator("#picture svg circle")).to_have_count(27)
    page.click("#picture-tabs button[data-picture=attention]")
    page.fill("#picture-item", "ava")
    page.click("#picture-button")
    expect(page.locator("#picture svg.head")).to_have_count(4)
    assert page.locator("#picture svg.head").first.locator("rect").count() == 1 + 2 + 3 + 4
    shot(page, "attention", "#pictures-panel")
    if SCREENSHOTS:
        page.set_viewport_size({"width": 1280, "height": 1000})
        page.evaluate("window.scrollTo(0, 0)")
        shot(page, "page")

    # Switch to the counting bigram: its table of counts
    page.select_option("#checkpoint", "bigram.safetensors")
    expect(page.locator("#about")).to_have_text(re.compile("^bigram: "))
    assert page.locator("#picture-tabs button").all_text_contents() == ["counts"]
    expect(page.locator("#picture svg.counts rect")).to_have_count(27 * 27)
    expect(page.locator("#score-summary")).not_to_have_text(summary)  # rescored by the bigram
    assert server.explorer.view.name == "bigram.safetensors"
    shot(page, "counts", "#pictures-panel", height=560)
    if SCREENSHOTS:
        page.set_viewport_size({"width": 390, "height": 844})
        page.evaluate("window.scrollTo(0, 0)")
        shot(page, "phone")

    assert errors == []
    # a refused request shows its message on the page (the browser logs the 400 itself)
    page.fill("#score-item", "Émile")
    page.click("#score-button")
    page.wait_for_selector("#score-error:not([hidden])")
    assert "not in the model's vocabulary" in page.text_content("#score-error")
    assert all("status of 400" in error for error in errors), errors
    assert requests and all(url.startswith(server.url) for url in requests), requests
    page.close()


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """A server holding a tiny transformer trained on the same names labelled by whether they end in a vowel."""
    folder = tmp_path_factory.mktemp("labelled")
    names = REPO_NAMES.read_text(encoding="utf-8").splitlines()[::50]
    data = folder / "names.tsv"
    data.write_text("".join(f"{'vowel' if name[-1] in 'aeiouy' else 'consonant'}\t{name}\n" for name in names),
                    encoding="utf-8")
    api.train("transformer", data, folder / "out", labels=True, model_options=dict(n_layer=2, n_head=2, n_embd=16),
              train_options=dict(steps=2000 if SCREENSHOTS else 50), progress=False)
    srv = serve.start(None, folder / "out", "127.0.0.1", 0, device="cpu", n_threads=1)
    thread = threading.Thread(target=srv.serve_forever, kwargs=dict(poll_interval=0.1), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_every_panel_under_a_label(labelled, browser):
    trained = labelled.explorer.view.trained
    page, requests, errors = open_page(browser, labelled.url)
    expect(page.locator("#label-control")).to_be_visible()
    assert page.locator("#label option").all_text_contents() == ["any", "consonant", "vowel"]
    expect(page.locator("#next-under")).to_have_text(re.compile("^Any label: the labels' distributions averaged"))

    # Sample: the items of the label chosen, each shown with it; any label: each item's own
    page.select_option("#label", "vowel")
    expect(page.locator("#next-under")).to_have_text("Under label vowel.")
    page.fill("#n", "6")
    page.fill("#seed", "3")
    page.click("#sample-button")
    expect(page.locator("#samples li")).to_have_count(6)
    assert page.locator("#samples .item").all_text_contents() == list(trained.sample(6, 3, label="vowel"))
    assert page.locator("#samples .tag").all_text_contents() == ["vowel"] * 6
    shot(page, "labels-sample", "#sample-panel")

    # Score under the label chosen, then under the likeliest (saying so)
    page.fill("#score-item", "emma")
    page.click("#score-button")
    expect(page.locator("#score-summary")).to_have_text(re.compile("; under label vowel$"))
    page.select_option("#label", "")
    likeliest = trained.classify(["emma"])[0]
    expect(page.locator("#score-summary")).to_have_text(re.compile(f"; under label {likeliest['label']} "
                                                                   r"\(the likeliest\)$"))

    # The labels' posterior for a typed item, likeliest first, as classify gives it
    page.click("#picture-tabs button[data-picture=labels]")
    page.fill("#picture-item", "emma")
    page.click("#picture-button")
    expect(page.locator("#picture .choice")).to_have_count(2)
    assert page.locator("#picture .choice .char").all_text_contents() == [p["label"] for p in likeliest["labels"]]
    shot(page, "labels-posterior", "#pictures-panel")

    # Attention under the label chosen
    page.click("#picture-tabs button[data-picture=attention]")
    page.select_option("#label", "consonant")
    expect(page.locator("#picture p.note")).to_have_text(re.compile("under label consonant\\.$"))
    expect(page.locator("#picture svg.head")).to_have_count(4)

    assert errors == []
    assert requests and all(url.startswith(labelled.url) for url in requests), requests
    page.close()
