from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy"


def run_validate(deploy_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(deploy_dir / "validate")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_it_accepts_the_shipped_compose_file_and_manifests() -> None:
    result = run_validate(DEPLOY_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_it_rejects_a_deployment_with_a_non_numeric_replica_count(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY_DIR, copy)
    web = copy / "k8s" / "base" / "web.yaml"
    web.write_text(web.read_text().replace("replicas: 3", 'replicas: "two"', 1))

    result = run_validate(copy)

    assert result.returncode != 0
    assert "web.yaml" in result.stdout
    assert "replicas" in result.stdout


def test_it_rejects_a_compose_service_with_an_unknown_restart_policy(tmp_path: Path) -> None:
    copy = tmp_path / "deploy"
    shutil.copytree(DEPLOY_DIR, copy)
    compose = copy / "compose.yaml"
    compose.write_text(
        compose.read_text().replace("restart: unless-stopped", "restart: sometimes", 1)
    )

    result = run_validate(copy)

    assert result.returncode != 0
    assert "compose.yaml" in result.stdout
    assert "sometimes" in result.stdout


def test_the_image_holds_every_app_the_settings_install() -> None:
    """An app missing from the image stops every container at startup."""
    from django.conf import settings

    project = DEPLOY_DIR.parent
    local_apps = {
        app.split(".")[0]
        for app in settings.INSTALLED_APPS
        if (project / app.split(".")[0]).is_dir()
    }
    dockerfile = (DEPLOY_DIR / "Dockerfile").read_text(encoding="utf-8")
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert local_apps, "the settings name the project's own apps"
    assert local_apps - copied == set()
