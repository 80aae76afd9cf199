"""The app served by uvicorn as a real process on 127.0.0.1, called over the network."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.examples.asgi.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_demo_server_answers_over_loopback(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "examples") + os.pathsep + str(ROOT),
        "LUMENQUEST_DATABASE_URL": f"sqlite:///{tmp_path / 'smoke.db'}",
        "LUMENQUEST_ARGON2_MEMORY_KIB": "64",
        "LUMENQUEST_ARGON2_TIME_COST": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "asgi_app", "--demo", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        printed = []
        for line in process.stdout:  # blocks until uvicorn says it is up (or the process ends)
            printed.append(line)
            if "Uvicorn running on" in line:
                break
        output = "".join(printed)
        assert "Uvicorn running on" in output, output
        password = next(
            line.split(":", 1)[1].split()[0] for line in printed if "admin password" in line
        )
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=10) as http:
            assert http.get("/health").json()["data"] == {"status": "up"}
            plans = http.get("/v1/plans").json()["data"]["items"]
            assert {p["name"] for p in plans} == {"Free", "Pro", "Business"}
            login = http.post(
                "/v1/auth/login", json={"email": "admin@lumenquest.test", "password": password}
            )
            assert login.status_code == 200
            token = login.json()["data"]["access_token"]
            users = http.get("/v1/admin/users", headers={"Authorization": f"Bearer {token}"})
            assert users.status_code == 200
            assert http.get("/docs").status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()
