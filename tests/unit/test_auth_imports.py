"""Without jwt_auth the watchdog never loads the JOSE library: start-up time and idle memory
stay what they were. With it, only Authenticator.start loads it."""

import subprocess
import sys

HEAVY = ("joserfc", "cryptography", "jwt")


def modules_after(code: str) -> set[str]:
    """Top-level module names loaded after running `code` in a fresh interpreter."""
    listing = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name.split(".")[0] for name in listing.split()}


def test_the_serving_modules_do_not_import_the_jose_library() -> None:
    loaded = modules_after(
        "import fwatchdog.cli, fwatchdog.router, fwatchdog.runtime.server, fwatchdog.auth"
    )
    assert "fwatchdog" in loaded
    assert not loaded & set(HEAVY)


def test_the_jose_library_is_imported_by_the_verifier() -> None:
    assert "joserfc" in modules_after("import fwatchdog.auth.verifier")
