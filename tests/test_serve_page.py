"""The web page of agekit serve in a real headless Chromium (Debian's `chromium`, driven by Playwright): it loads
the page from a server started on 127.0.0.1, uploads a photo, and reads what the page drew. A screenshot is
saved under pytest's tmp folder (its path is printed); AGEKIT_SCREENSHOT=PATH saves a copy there too (how
docs/img/serve-page.png was made)."""
import os
import shutil

import pytest
from test_serve import PHOTO, Server, request

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 # a fake camera (a test pattern) that getUserMedia may use without asking
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve-page"), "--concurrency", "1")
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def browser_page(server, tmp_path_factory):
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("the web page test needs Debian's chromium: apt-get install -y chromium", pytrace=False)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1000, "height": 1100})
        page = context.new_page()
        page.requests_seen = []
        page.on("request", lambda r: page.requests_seen.append(r.url))
        page.goto(server.url + "/")
        yield page
        context.close()


def test_page_estimates_and_checks_a_photo(server, browser_page, tmp_path):
    page = browser_page
    api = request(server.url + "/v1/estimate", PHOTO.read_bytes(), "image/jpeg")[2]["faces"][0]
    page.set_input_files("#file", str(PHOTO))
    page.wait_for_selector("#faces .face svg")
    face = page.locator("#faces .face").first
    assert page.locator("#faces .face").count() == 1
    assert float(face.get_attribute("data-age")) == api["age"]
    title = face.locator("h2").inner_text()
    summary = face.locator(".summary").inner_text()
    assert title == f"Face 1: {api['age']:.1f} years"
    assert f"90% interval {api['interval'][0]:.1f}-{api['interval'][1]:.1f}" in summary
    assert f"{api['gender']} (p={api['gender_prob']:.2f})" in summary
    assert face.locator("svg rect.bar").count() == 101  # one bar per age 0..100
    assert page.get_attribute("#canvas", "data-faces") == "1"
    # the box is drawn: the canvas has the box's colour on the box's top edge
    x1, y1, x2, _ = api["box"]
    pixel = page.evaluate(f"""() => Array.from(document.getElementById('canvas').getContext('2d')
                                   .getImageData({int((x1 + x2) / 2)}, {int(y1)}, 1, 1).data)""")
    assert max(abs(a - b) for a, b in zip(pixel[:3], (0x25, 0x63, 0xEB))) <= 4  # the first face's blue
    assert page.inner_text("#status") == "1 face found."
    shot = tmp_path / "serve-page.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    if os.environ.get("AGEKIT_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["AGEKIT_SCREENSHOT"])

    # age check: the decision at 18, then at 60 after moving the slider
    page.check("#mode-check")
    page.wait_for_selector(".face[data-decision]")
    assert page.locator(".face").first.get_attribute("data-decision") == "over"
    assert "over 18: p(age ≥ 18) = 0.9" in page.locator(".face .check").first.inner_text().lower()
    page.locator("#min-age").fill("60")
    page.wait_for_function("() => /P\\(age ≥ 60\\) = 0\\.\\d\\d/.test(document.querySelector('.face .check').textContent)")
    assert page.locator(".face").first.get_attribute("data-decision") == "under"
    others = [u for u in page.requests_seen if not u.startswith(server.url) and not u.startswith(("blob:", "data:"))]
    assert others == []  # nothing fetched from anywhere else


def test_page_shows_errors_and_takes_a_camera_photo(server, browser_page, tmp_path):
    page = browser_page
    page.check('input[name="mode"][value="estimate"]')
    bad = tmp_path / "not-a-photo.jpg"
    bad.write_bytes(b"this is not a photo" * 20)
    page.set_input_files("#file", str(bad))
    page.wait_for_selector("#status.error")
    assert "(bad_image)" in page.inner_text("#status")
    # a format the server reads but Chromium cannot show (TIFF): the faces are listed, nothing drawn
    from PIL import Image

    tiff = tmp_path / "astronaut.tiff"
    Image.open(PHOTO).save(tiff)
    page.set_input_files("#file", str(tiff))
    page.wait_for_function("() => document.getElementById('status').textContent === '1 face found.'")
    assert page.locator("#faces .face").count() == 1 and page.locator("#canvas").is_hidden()
    # the camera: Chromium's fake device gives a test pattern (no face in it)
    page.click("#camera-start")
    page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
    page.click("#camera-shoot")
    page.wait_for_function("() => document.getElementById('status').textContent === 'No face found in this photo.'")
    assert page.locator("#faces .face").count() == 0
    page.click("#camera-stop")
    assert page.locator("#video").is_hidden()
