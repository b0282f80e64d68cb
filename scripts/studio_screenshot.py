"""Take docs/studio.png: serve the studio on the shipped shapes model, make a clip in a headless Chromium
(Debian's chromium + chromium-driver, through selenium, as tests/test_web.py does) and photograph the page.

    python scripts/studio_screenshot.py [docs/studio.png]
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

PROMPT = "a red circle moving right on a black background"


def wait(check, limit: float = 300):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if value := check():
            return value
        time.sleep(0.5)
    raise SystemExit(f"gave up after {limit:.0f}s")


def up(url: str) -> bool:
    try:
        return bool(urllib.request.urlopen(url, timeout=5))
    except OSError:
        return False


def main(out: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    with tempfile.TemporaryDirectory() as folder:
        server = subprocess.Popen([sys.executable, "-m", "vidldm", "serve", "--port", str(port), "--output-dir", folder])
        try:
            wait(lambda: up(url) or server.poll() is not None)
            if server.poll() is not None:
                raise SystemExit(f"vidldm serve exited ({server.returncode})")
            shoot(url, out)
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"wrote {out}")


def shoot(url: str, out: Path) -> None:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1250", "--hide-scrollbars"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(url)
        prompt = wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#generate-prompt textarea"))[0]
        prompt.send_keys(PROMPT)
        seed = driver.find_element(By.CSS_SELECTOR, "#generate-seed textarea, #generate-seed input")
        seed.send_keys("7")
        driver.find_element(By.CSS_SELECTOR, "#generate-run").click()
        wait(lambda: driver.execute_script("const v = document.querySelector('#generate-video video');"
                                           "return v && v.duration > 0"))
        driver.execute_script("document.querySelector('#generate-video video').currentTime = 1.2;")
        driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(1)
        driver.save_screenshot(str(out))
    finally:
        driver.quit()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/studio.png"))
