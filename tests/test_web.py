"""The web studio (`vidldm serve`), served for real on a free localhost port and driven in a headless Chromium
(Debian's `chromium` + `chromium-driver`, through selenium) and through gradio's own client.

Runs on the tiny random model at 32x32, 4 frames, 2 steps. In CI (CI=true) a missing browser or package is
a failure, not a skip: `.ci/run` installs them.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from vidldm.io import probe_video, read_video

REPO = Path(__file__).resolve().parents[1]
CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
FRAMES, STEPS = 4, 2


def _need(what: str, ok: bool) -> None:
    """Skip where the studio's test tools are missing, except in CI, where that is a failure."""
    if not ok:
        message = f"{what} is missing: apt-get install -y chromium chromium-driver; pip install -e '.[dev]'"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {message}")
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`vidldm serve --model tiny --sparsectrl ENCODER` in its own process: (url, process, output folder). The
    encoder is a random keyframe encoder for the tiny model, so the generate tab shows its keyframe fields."""
    _need("gradio", _importable("gradio"))
    from vidldm.control import new_keyframe_encoder
    from vidldm.loading import tiny_pipeline
    from vidldm.models.tiny import randomize_

    out, port = tmp_path_factory.mktemp("studio"), _free_port()
    tiny = tiny_pipeline()
    encoder = out.parent / "sparsectrl"
    randomize_(new_keyframe_encoder(tiny.unet, tiny.motion_adapter), std=0.05, seed=3).save_pretrained(encoder)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    log = open(out.parent / "serve.log", "w")  # noqa: SIM115 (open for the server's life)
    proc = subprocess.Popen([sys.executable, "-m", "vidldm", "serve", "--model", "tiny", "--port", str(port),
                             "--output-dir", str(out), "--sparsectrl", str(encoder)], env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(url, proc, out.parent / "serve.log")
        yield url, proc, out
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _wait_until_up(url: str, proc: subprocess.Popen, log: Path, limit: float = 300) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"vidldm serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"vidldm serve did not answer within {limit:.0f}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium with downloads going to a folder of its own: (driver, download folder)."""
    _need("selenium", _importable("selenium"))
    _need("chromium and chromium-driver", Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists())
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver, downloads
    finally:
        driver.quit()


def _wait(check, limit: float = 240, every: float = 0.25):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up after {limit:.0f}s waiting for {check.__doc__ or check}")


def _open(driver, url: str):
    from selenium.webdriver.common.by import By

    driver.get(url)

    def loaded():
        """the page to load"""
        return driver.find_elements(By.CSS_SELECTOR, "#generate-prompt textarea")

    _wait(loaded, 120)
    return By


def _type(driver, By, selector: str, text: str) -> None:
    from selenium.webdriver.common.keys import Keys

    field = driver.find_element(By.CSS_SELECTOR, selector)
    field.send_keys(Keys.CONTROL, "a")  # keys, not .clear(): the page hears them as typing
    field.send_keys(Keys.BACKSPACE)
    field.send_keys(text)


def test_generate_in_the_browser_plays_and_downloads_the_clip(server, browser):
    url, _, out = server
    driver, downloads = browser
    By = _open(driver, url)
    _type(driver, By, "#generate-prompt textarea", "0:a red circle | 2:a blue circle")  # prompt travel
    _type(driver, By, "#generate-frames input", str(FRAMES))
    _type(driver, By, "#generate-steps input", str(STEPS))
    _type(driver, By, "#generate-seed textarea, #generate-seed input", "1234")
    driver.find_element(By.CSS_SELECTOR, "#generate-run").click()

    def playing():
        """the clip's video element to have a duration > 0"""
        return driver.execute_script("const v = document.querySelector('#generate-video video');"
                                     "return v && v.duration > 0 ? v.duration : null")

    assert _wait(playing) == pytest.approx(FRAMES / 8, abs=0.2)  # 8 fps, the default
    driver.find_element(By.CSS_SELECTOR, "#generate-mp4").click()

    def downloaded():
        """the mp4 to be downloaded"""
        done = [p for p in downloads.glob("*.mp4")]
        return done if done and not list(downloads.glob("*.crdownload")) else None

    [mp4] = _wait(downloaded, 60)
    assert read_video(mp4)[0].shape == (FRAMES, 32, 32, 3)
    [sidecar] = out.glob("*.json")
    saved = json.loads(sidecar.read_text())
    assert (saved["command"], saved["prompt"], saved["frames"], saved["steps"], saved["seed"]) == (
        "generate", "0:a red circle | 2:a blue circle", FRAMES, STEPS, 1234)
    assert mp4.read_bytes() == Path(saved["output"]).read_bytes()  # the download is the clip written
    shown = driver.find_element(By.CSS_SELECTOR, "#generate-seed-used input").get_attribute("value")
    assert shown == "1234"
    _type(driver, By, "#generate-seed textarea, #generate-seed input", "")
    driver.find_element(By.CSS_SELECTOR, "#generate-reuse").click()
    seed_field = driver.find_element(By.CSS_SELECTOR, "#generate-seed textarea, #generate-seed input")
    _wait(lambda: seed_field.get_attribute("value") == "1234", 30)
    if os.environ.get("VIDLDM_STUDIO_SCREENSHOT"):  # docs/studio.png: VIDLDM_STUDIO_SCREENSHOT=docs/studio.png
        driver.save_screenshot(os.environ["VIDLDM_STUDIO_SCREENSHOT"])


def test_keyframes_in_the_browser_go_through_the_servers_encoder(server, browser, tmp_path):
    from PIL import Image

    url, _, out = server
    driver, _ = browser
    stills = [tmp_path / "first.png", tmp_path / "last.png"]
    for still, value in zip(stills, (40, 220)):
        Image.fromarray(np.full((32, 32, 3), value, np.uint8)).save(still)
    By = _open(driver, url)
    [fold] = [e for e in driver.find_elements(By.XPATH, "//*[contains(text(), 'keyframes (optional)')]") if e.is_displayed()]
    fold.click()
    for n, still in enumerate(stills, 1):
        _wait(lambda n=n: driver.find_elements(By.CSS_SELECTOR, f"#generate-keyframe-{n} input[type=file]"), 30)
        driver.find_element(By.CSS_SELECTOR, f"#generate-keyframe-{n} input[type=file]").send_keys(str(still))
        _wait(lambda n=n, still=still: driver.find_elements(
            By.CSS_SELECTOR, f"#generate-keyframe-{n} [aria-label='{still.name}']"), 60)  # uploaded
    _type(driver, By, "#generate-prompt textarea", "a circle between two keyframes")
    _type(driver, By, "#generate-frames input", str(FRAMES))
    _type(driver, By, "#generate-steps input", str(STEPS))
    _type(driver, By, "#generate-seed textarea, #generate-seed input", "77")
    before = set(out.glob("*.json"))
    driver.find_element(By.CSS_SELECTOR, "#generate-run").click()

    def made():
        """the keyframed clip's sidecar"""
        return [p for p in set(out.glob("*.json")) - before if "keyframes" in p.name]

    [sidecar] = _wait(made)
    saved = json.loads(sidecar.read_text())
    assert [spec.split(":")[0] for spec in saved["keyframe"]] == ["0", str(FRAMES - 1)]  # blank frame: the last
    assert Path(saved["keyframe"][0].split(":", 1)[1]).read_bytes() == stills[0].read_bytes()
    assert saved["sparsectrl"].endswith("sparsectrl:1.0") and saved["seed"] == 77


def test_a_broken_image_to_animate_is_one_line_in_the_page(server, browser, tmp_path):
    url, _, out = server
    driver, _ = browser
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a png\n" * 10)
    By = _open(driver, url)
    [tab] = [t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Animate a still"]
    tab.click()
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#animate-input input[type=file]"), 30)
    driver.find_element(By.CSS_SELECTOR, "#animate-input input[type=file]").send_keys(str(broken))
    _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#animate-input [aria-label='broken.png']"), 60)  # uploaded
    _type(driver, By, "#animate-prompt textarea", "the circle moves up")
    before = sorted(p.name for p in out.iterdir())
    driver.find_element(By.CSS_SELECTOR, "#animate-run").click()
    message = "'broken.png' could not be read as an image; upload a .png, .jpg, .jpeg, .webp, .bmp file"
    _wait(lambda: message in driver.find_element(By.TAG_NAME, "body").text, 60)
    assert "Traceback" not in driver.find_element(By.TAG_NAME, "body").text
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written


def test_the_gallery_lists_past_clips_and_replays_one(server, browser):
    from gradio_client import Client

    url, _, out = server
    made = _job(Client(url, verbose=False), 42).result(timeout=300)
    driver, _ = browser
    By = _open(driver, url)  # a page loaded after the clip was made lists it
    [tab] = [t for t in driver.find_elements(By.CSS_SELECTOR, "button[role=tab]") if t.text == "Gallery"]
    tab.click()
    thumbs = _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#gallery button.thumbnail-item"), 60)
    assert len(thumbs) == len(list(out.glob("*.mp4")))
    thumbs[0].click()  # the newest first
    _wait(lambda: "a red circle, job 42" in driver.find_element(By.TAG_NAME, "body").text, 60)  # its settings
    driver.find_element(By.CSS_SELECTOR, "#gallery-run").click()
    _wait(lambda: driver.execute_script("const v = document.querySelector('#gallery-video video');"
                                        "return v && v.duration > 0"))
    again = sorted(out.glob("*.mp4"))[-1]
    assert again.name != Path(made[0]).name and json.loads(again.with_suffix(".json").read_text())["seed"] == 42
    np.testing.assert_array_equal(read_video(again)[0], read_video(out / Path(made[0]).name)[0])


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _blank(setting):
    """What a field the visitor leaves alone sends: 'default' in a dropdown without a fixed default, an unticked
    switch, else an empty text field."""
    if setting.negatable or (setting.choices is not None and setting.default is None):
        return "default"
    return False if setting.type is bool else ""


def _job(client, seed: int):
    # the generate tab's inputs in the order of form.form_settings("generate"), by name
    from vidldm.sampling_settings import SAMPLING_DEFAULTS
    from vidldm.web.form import form_settings

    values = {"num_frames": FRAMES, "num_inference_steps": STEPS, "seed": str(seed), "height": 32, "width": 32}
    # what the form shows for the tiny model: the table's fallbacks (it has no defaults of its own)
    defaults = {"scheduler": "ddim", "fps": 8, **SAMPLING_DEFAULTS}
    args = [values.get(s.name, defaults.get(s.name, _blank(s))) for s in form_settings("generate")]
    keyframes = [None, "0", None, ""]  # the two keyframe slots (image, frame), left empty, after the settings
    return client.submit(f"a red circle, job {seed}", *args, *keyframes, api_name="/generate")


def test_five_queued_jobs_finish_in_order_with_steady_memory(server):
    _need("gradio_client", _importable("gradio_client"))
    from gradio_client import Client
    from gradio_client.utils import Status

    url, proc, out = server
    client = Client(url, verbose=False)
    _job(client, 100).result(timeout=300)
    after_first = _rss_mb(proc.pid)
    jobs, seen = [], set()

    def look():
        """each job to be in the queue (or running, or done); gradio tells a waiting visitor their place"""
        statuses = [job.status() for job in jobs]
        seen.update((i, s.code, s.rank) for i, s in enumerate(statuses))
        return statuses[-1].code not in (Status.STARTING, Status.JOINING_QUEUE)

    for seed in range(5):  # one after the other, each in the queue before the next: the order is known
        jobs.append(_job(client, seed))
        _wait(look, 60, 0.02)
    while not all(job.done() for job in jobs):
        look()
        time.sleep(0.02)
    waited = any(code == Status.IN_QUEUE and (rank or 0) > 0 for _, code, rank in seen)
    results = [job.result(timeout=600) for job in jobs]
    after_all = _rss_mb(proc.pid)
    numbers = [int(Path(r[0]).name.split("-")[0]) for r in results]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5  # made one after the other, in the order asked
    assert [r[4] for r in results] == list(range(5))  # the seed shown is each job's own
    for r in results:
        mp4 = out / Path(r[0]).name
        assert probe_video(mp4)["frames"] == FRAMES and json.loads(mp4.with_suffix(".json").read_text())["seed"] in range(5)
    assert waited, f"no job was seen waiting in the queue: {sorted(seen, key=str)}"
    print(f"server RSS after the first job {after_first:.0f} MiB, after five more {after_all:.0f} MiB")
    assert after_all <= 1.10 * after_first
