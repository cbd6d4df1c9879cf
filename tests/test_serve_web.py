"""The voice page `aura serve` serves at `/`, in a real browser: Debian's headless Chromium with a fake
microphone that plays a question spoken by espeak-ng, driven by Playwright against a real `aura serve` on
the shipped checkpoint. Set AURA_WEB_SCREENSHOT=PATH to keep the screenshot (the README's is made so)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from conftest import aura_serve
from playwright.sync_api import ConsoleMessage, Page, expect, sync_playwright

CHROMIUM = shutil.which("chromium")
CONTEXT = "The capital of Peru is Lima. The currency of Japan is the yen. Kenya is in Africa."
QUESTION = "What is the capital of Peru?"
TEXT_MESSAGE = "What is the capital of France?"
PENDING = re.compile(r"\bpending\b")  # a turn whose answer is still streaming

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH: scripts/setup.sh installs Debian's chromium with apt"
    ),
]


def hold_to_talk(page: Page, seconds: float) -> None:
    """Press the talk button with the mouse, keep it down while the fake microphone speaks, let go."""
    box = page.locator("#talk").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    expect(page.locator("#talk")).to_have_class(re.compile(r"\brecording\b"), timeout=10_000)
    page.wait_for_timeout(seconds * 1000)
    page.mouse.up()


def test_voice_page_answers_a_spoken_question(tmp_path: Path) -> None:
    question = tmp_path / "question.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(question), QUESTION], check=True)
    spoken_seconds = sf.info(question).duration
    flags = [
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        # played once from the moment the page opens the microphone, then silence
        f"--use-file-for-fake-audio-capture={question}%noloop",
    ]
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text}")

    with aura_serve() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=flags)
        try:
            page = browser.new_page(viewport={"width": 820, "height": 760})
            page.on("console", on_console)
            page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
            page.goto(url)
            expect(page.locator("#model-name")).not_to_have_text("")
            page.fill("#context", CONTEXT)
            hold_to_talk(page, spoken_seconds + 0.7)

            spoken = page.locator(".turn").nth(0)
            expect(spoken).not_to_have_class(PENDING, timeout=60_000)
            assert "Lima" in spoken.locator(".answer").inner_text()
            ttft = spoken.locator(".meta").get_attribute("data-ttft-ms")
            assert ttft and 0 < int(ttft) < 30_000
            expect(spoken.locator(".meta")).to_contain_text("first token")
            # the recording that was sent is the spoken question, not a fragment or silence
            recorded = float(spoken.locator(".clip .hint").inner_text().removesuffix(" s"))
            assert spoken_seconds - 0.3 < recorded < spoken_seconds + 2.0
            assert (
                page.locator("#context").input_value() == CONTEXT
            )  # the context stays for the next question

            # a typed message on its own: the base LLM answers, streamed into a second turn below the first
            page.fill("#context", TEXT_MESSAGE)
            page.click("#send-text")
            typed = page.locator(".turn").nth(1)
            expect(typed).not_to_have_class(PENDING, timeout=60_000)
            expect(page.locator(".turn")).to_have_count(2)
            body = {"messages": [{"role": "user", "content": TEXT_MESSAGE}], "max_tokens": 128}
            answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).json()
            assert (
                typed.locator(".answer").inner_text().strip()
                == answer["choices"][0]["message"]["content"].strip()
            )
            assert "Paris" in typed.locator(".answer").inner_text()

            shot = Path(os.environ.get("AURA_WEB_SCREENSHOT", tmp_path / "voice-page.png"))
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
        finally:
            browser.close()
    assert not problems, problems
