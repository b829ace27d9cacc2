"""The coordinator's web page (issue 21) in a real headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against a real 3-worker cluster that needs an API key: the page
asks for the key and keeps it in the session only, loads with no console errors and makes no request
beyond the coordinator, shows every node with the layers the workers hold, streams a chat answer equal
to the API's greedy answer, turns a killed worker red within seconds and back when it returns, and a
screenshot under load is saved (printed path; BOLTPIPE_TEST_ARTIFACTS chooses the folder)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path

import openai
import pytest

from tests.api_cluster import ApiCluster, start_api_cluster, stop_api_cluster
from tests.system_tools import require

pytestmark = pytest.mark.cluster

MODEL = "smollm2-135m-instruct"
KEY = "sk-page-test-0123456789"
ARTIFACTS = Path(os.environ.get("BOLTPIPE_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def _chromium_missing() -> str | None:
    for program in ("chromium", "chromedriver"):
        if shutil.which(program) is None:
            return f"{program} is not installed (Debian: apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_dir: Path):
    cluster = start_api_cluster(tmp_path_factory.mktemp("page"), smollm2_dir,
                                serve={"max_concurrent": 8, "api_keys": [KEY]})
    try:
        yield cluster
    finally:
        stop_api_cluster(cluster)


@pytest.fixture(scope="module")
def browser():
    require(_chromium_missing())
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900",
                 "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                 "--disable-background-networking", "--disable-component-update"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(shutil.which("chromedriver"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()
        process = service.process
        if process is not None and process.poll() is None:  # ended by pid, whatever happened
            process.kill()


def _wait(predicate, timeout_s: float, what: str, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


def _node_up(driver, name: str) -> str | None:
    cards = driver.find_elements("css selector", f'[data-node="{name}"]')
    return cards[0].get_attribute("data-up") if cards else None


def _requests_seen(driver) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def _problems(driver) -> list[str]:
    return [f"{e['level']}: {e['message']}" for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def test_the_page_in_chromium(api: ApiCluster, browser) -> None:
    driver, base = browser, api.inventory.url
    driver.get(f"{base}/")
    # The API needs a key: the page asks for it, then keeps it for this browser session only.
    form = _wait(lambda: driver.find_elements("css selector", "form#api-key-form"), 10, "the key form")[0]
    _wait(lambda: form.is_displayed(), 10, "the key form shown")
    driver.find_element("css selector", "input#api-key").send_keys(KEY)
    form.submit()
    assert driver.execute_script("return Object.values(sessionStorage).includes(arguments[0])", KEY)
    assert not driver.execute_script("return Object.values(localStorage).includes(arguments[0])", KEY)
    assert KEY not in driver.execute_script("return document.cookie")

    # Every node, with the layers its worker really holds.
    infos = api.worker_infos()
    for node, info in zip(api.inventory.nodes, infos):
        _wait(lambda: _node_up(driver, node.name) == "true", 15, f"{node.name} shown up")
        card = driver.find_element("css selector", f'[data-node="{node.name}"] [data-field="layers"]')
        assert [int(n) for n in re.findall(r"\d+", card.text)] == [info.slice.layer_start, info.slice.layer_end]

    # A chat message streams the API's greedy answer.
    question = "What is the capital of France?"
    client = openai.OpenAI(base_url=api.base_url, api_key=KEY, max_retries=0, timeout=300)
    expected = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": question}],
                                              temperature=0, max_tokens=24).choices[0].message.content
    for field, value in (("temperature", "0"), ("max-tokens", "24")):
        box = driver.find_element("css selector", f"input#{field}")
        box.clear()
        box.send_keys(value)
    driver.find_element("css selector", "textarea#prompt").send_keys(question)
    driver.find_element("css selector", "button#send").click()
    answer = _wait(lambda: [m for m in driver.find_elements("css selector", '.message[data-role="assistant"]')
                            if m.get_attribute("data-streaming") == "false"], 120, "the answer")[-1]
    assert answer.get_attribute("textContent") == expected

    # A killed worker turns red within seconds; its supervisor starts it again and the red clears.
    victim_node, victim = api.inventory.nodes[1].name, infos[1].pid
    os.kill(victim, signal.SIGKILL)
    _wait(lambda: _node_up(driver, victim_node) == "false", 10, f"{victim_node} shown down", every_s=0.05)
    _wait(lambda: _node_up(driver, victim_node) == "true", 120, f"{victim_node} shown up again")

    # Under load: a screenshot for people to look at.
    done = threading.Event()

    def load() -> None:
        async def streams():
            aclient = openai.AsyncOpenAI(base_url=api.base_url, api_key=KEY, max_retries=0, timeout=300)
            prompts = ["Write a poem about the sea.", "Explain how a bicycle works.", "List ten fruits.",
                       "Describe Paris."]
            await asyncio.gather(*(aclient.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=64) for p in prompts))
        asyncio.run(streams())
        done.set()

    worker = threading.Thread(target=load)
    worker.start()
    try:
        _wait(lambda: driver.execute_script(
            "return [...document.querySelectorAll('[data-node]')].some(e => /\\d/.test(e.textContent))"), 10, "figures")
        time.sleep(4)  # a few live samples in the charts
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "web-page-under-load.png"
        driver.save_screenshot(str(shot))
        print(f"\nscreenshot of the page under load: {shot}")
        assert shot.stat().st_size > 10_000
    finally:
        worker.join(timeout=300)
    assert done.is_set()

    # Nothing but the coordinator was asked for anything, and the console stayed clean.
    outside = [u for u in _requests_seen(driver) if not u.startswith(base) and not u.startswith("data:")]
    assert outside == []
    assert _problems(driver) == []
