"""Screenshots of the web page on `make demo`'s stack, for docs/screenshots/.

    make demo && .venv/bin/python scripts/web_screenshots.py --out docs/screenshots

Starts the serve graph in this process the way `rayrag readiness --local` does (the demo's
bundle, model and MLflow store; fresh admin and public keys; a temporary event log and
escalation queue), drives Debian's chromium (`make browser`) through Selenium: a public key
asks a two-hop question, opens the first citation and rates the answer (`web-answer.png`);
an admin key opens the admin view and looks up the events of the queue's newest escalation
(`web-admin.png`). Whatever the demo model answers is what the picture shows.
"""

from __future__ import annotations

import argparse
import base64
import os
import tempfile
from pathlib import Path

import httpx

QUESTION = "Which product is made by the company that acquired Avenra Logistics?"  # demo-q000
WARM_UP = ("Which drug is made by the company that acquired Saltmarsh Pharmaceuticals?",)
FLAGS = (
    "--headless=new --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync "
    "--disable-dev-shm-usage --window-size=1440,1000"
).split()


def capture(driver, path: Path) -> None:
    """The whole page, not the window."""
    width, height = driver.execute_script(
        "const e = document.documentElement; return [e.scrollWidth, e.scrollHeight]"
    )
    clip = {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"))
    parser.add_argument("--demo", type=Path, default=Path(".rayrag/demo"))
    parser.add_argument("--comment", default="wrong product: follow the acquirer, not Avenra")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from rayrag.cli.readiness import local_service

    os.environ.setdefault("SE_OFFLINE", "true")
    config = args.demo / "serve.yaml"
    with (
        local_service(
            str(config) if config.is_file() else None, [], args.demo / "bundle", args.demo / "model"
        ) as (service, _),
        tempfile.TemporaryDirectory(prefix="rayrag-chromium-") as profile,
    ):
        for question in WARM_UP:  # something in the escalation queue and the event log
            httpx.post(
                f"{service.url}/v1/ask",
                json={"question": question},
                headers={"Authorization": f"Bearer {service.user_key}"},
                timeout=300,
            )
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for flag in (*FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)

        def until(condition, seconds: float = 300):
            return WebDriverWait(driver, seconds, poll_frequency=0.2).until(condition)

        def element(element_id: str):
            return driver.find_element(By.ID, element_id)

        def use_key(key: str, state: str) -> None:
            driver.get(service.url)
            element("api-key").send_keys(key)
            element("key-save").click()
            until(lambda _: element("key-state").text == state, 30)

        try:
            use_key(service.user_key, "user key")
            element("question").send_keys(QUESTION)
            element("ask-button").click()
            until(lambda _: element("feedback").is_displayed() or element("error").text)
            driver.find_elements(By.CSS_SELECTOR, "#citations button.link")[0].click()
            element("thumb-down").click()
            element("feedback-comment").send_keys(args.comment)
            element("feedback-send").click()
            until(lambda _: element("feedback-state").text != "", 30)
            capture(driver, args.out / "web-answer.png")

            driver.execute_script("sessionStorage.clear()")
            use_key(service.admin_key, "admin key")
            element("tab-admin").click()
            panels = ("escalations", "governance", "registry", "readiness")
            until(lambda _: all(element(panel).text for panel in panels), 120)
            links = driver.find_elements(By.CSS_SELECTOR, "#escalations td button.link")
            if links:
                links[0].click()
                until(lambda _: element("events").text, 30)
            capture(driver, args.out / "web-admin.png")
        finally:
            driver.quit()
    print(f"wrote {args.out / 'web-answer.png'} and {args.out / 'web-admin.png'}")


if __name__ == "__main__":
    main()
