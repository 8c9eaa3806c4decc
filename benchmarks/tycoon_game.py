"""The Tycoon game at top speed: every frame's work under 16 ms (95th percentile).

    python benchmarks/tycoon_game.py [--seconds 12] [--pack PATH]

Serves the app (``manage.py runserver`` on a free port, a throwaway database) and plays
the game in headless Chromium (Debian's chromium and chromium-driver) at its top speed
with upgrades taken automatically: 4 factories x 4 turbofans, every turbofan's 16 sensor
sparklines, status strip and strategy chart, and the leaderboard, drawn every frame.
The game records each frame's work (from the animation frame's start to the end of its
drawing, in ms) and the hours each advanced; this prints their median, 95th percentile
and maximum over the frames that advanced, and the intervals between frames. The pack
is 100 synthetic FD001-like engines with drifting sensors, or a real one with --pack.
Exits 1 when the goal is missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.tycoon import synthetic_pool  # noqa: E402
from tests.browser.conftest import headless_chromium  # noqa: E402  (the tests' own browser)
from turbofan.tycoon_pack import (  # noqa: E402
    SHOWN_SENSORS,
    EngineSet,
    ModelInfo,
    PredictionPack,
)

ROOT = Path(__file__).resolve().parent.parent
GOAL_MS = 16.0


def synthetic_pack() -> PredictionPack:
    lives, predictions = synthetic_pool()
    keys = ("local:single-site", "federated", "centralised")
    models = [ModelInfo(key, key.split(":")[0], key, "synthetic") for key in keys]
    models[0].site = "single-site"
    rng = np.random.default_rng(1)
    wear = np.arange(lives.max())[None, :, None] / lives[:, None, None]
    drift = rng.uniform(-0.4, 0.4, (1, 1, len(SHOWN_SENSORS)))
    noise = rng.normal(0, 0.06, (len(lives), lives.max(), len(SHOWN_SENSORS)))
    sensors = np.clip(255 * (0.5 + drift * wear**2 + noise), 0, 255).astype(np.uint8)
    holdout = EngineSet(
        units=np.arange(1, len(lives) + 1),
        cycles=lives.astype(np.int64),
        final_rul=np.zeros(len(lives)),
        predicted=dict(zip(keys, predictions, strict=True)),
        sensors=sensors,
    )
    return PredictionPack(subset="FD001", models=models, holdout=holdout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve(var_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "VAR_DIR": str(var_dir)}
    env.pop("DATABASE_URL", None)  # a throwaway SQLite database under VAR_DIR
    python = sys.executable
    subprocess.run([python, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    port = free_port()
    server = subprocess.Popen(
        [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            return server, url
        except OSError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("the app did not start")


def play(url: str, seconds: float) -> dict[str, Any]:
    binary, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not binary or not driver:
        raise SystemExit("Chromium not found: apt-get install chromium chromium-driver")
    with headless_chromium(binary, driver) as browser:
        browser.set_window_size(1280, 900)
        browser.get(url + "/tycoon/play/")
        for _ in range(100):
            if browser.execute_script("return Boolean(window.tycoonGame)"):
                break
            time.sleep(0.1)
        browser.execute_script(
            """var page = window.tycoonGame;
            document.getElementById('intro-dialog').close();
            document.getElementById('auto-upgrade').click();
            document.getElementById('speed').value = '7';
            page.frameTimes = []; page.frameHours = []; page.recording = true;
            page.intervals = []; var last = null;
            (function watch(now) {
              if (last !== null) { page.intervals.push(now - last); }
              last = now; requestAnimationFrame(watch);
            })(performance.now());
            page.setPlaying(true);"""
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if browser.execute_script("return document.getElementById('end-dialog').open"):
                browser.execute_script(
                    "document.getElementById('end-dialog').close('on');"
                )  # play on: the race is the workload, not its end
            time.sleep(0.25)
        return dict(
            browser.execute_script(
                """var p = window.tycoonGame;
                return {times: p.frameTimes, hours: p.frameHours, intervals: p.intervals,
                        hour: p.game.hour};"""
            )
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--pack", type=Path, default=None, help="a prediction pack to play")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tycoon-game-") as folder:
        var_dir = Path(folder)
        pack_file = var_dir / "tycoon" / "pack.npz"
        if args.pack:
            pack_file.parent.mkdir(parents=True)
            shutil.copy(args.pack, pack_file)
        else:
            synthetic_pack().save(pack_file)
        server, url = serve(var_dir)
        try:
            seen = play(url, args.seconds)
        finally:
            server.terminate()
            server.wait(10)
    busy = np.asarray([t for t, h in zip(seen["times"], seen["hours"], strict=True) if h > 0])
    if not len(busy):
        print("no frame advanced the game")
        return 1
    hours = np.asarray([h for h in seen["hours"] if h > 0])
    intervals = np.asarray(seen["intervals"])
    p95 = float(np.percentile(busy, 95))
    print(f"played {seen['hour']:,} hours in {args.seconds:.0f} s at top speed (500 hours/s)")
    print("| measure | frames | median ms | p95 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    for name, values in (
        ("work per frame (game hours + drawing)", busy),
        ("interval between frames", intervals),
    ):
        print(
            f"| {name} | {len(values)} | {np.median(values):.1f} | "
            f"{np.percentile(values, 95):.1f} | {np.max(values):.1f} |"
        )
    print(f"hours per frame: {hours.mean():.1f} on average")
    met = p95 < GOAL_MS
    print(
        f"\ngoal: a frame's work under {GOAL_MS:.0f} ms at the 95th percentile: "
        f"{'met' if met else 'MISSED'} ({p95:.1f} ms)"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
